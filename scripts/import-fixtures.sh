#!/usr/bin/env bash
# Copies the reference fixtures this project's tests use from ../shared/fixtures into
# tests/data, so the tests pass on a machine without ../shared. Hub-cache snapshots whose
# symlinks were flattened into small text files ("../../blobs/<hash>") get real relative
# symlinks back, as huggingface_hub lays them out. Run from the repository root.
set -euo pipefail
src=${1:-../shared/fixtures}
dst=tests/data
rm -rf "$dst/seed" "$dst/methods" "$dst/gguf" "$dst/infer"
mkdir -p "$dst/seed" "$dst/methods" "$dst/gguf" "$dst/infer"

cp -r "$src/seed/hub" "$dst/seed/hub"
cp "$src/seed/seed-120b.yml" "$src/seed/mergekit-tensors.json" "$src/seed/mergekit-config.json" \
   "$src/seed/mergekit-README.md" "$dst/seed/"
chmod -R u+w "$dst/seed"
find "$dst/seed/hub" -path '*/snapshots/*' -type f | while read -r file; do
  target=$(head -c 200 "$file")
  case "$target" in
    ../../blobs/*) rm "$file"; ln -s "$target" "$file" ;;
  esac
done

cp -r "$src/methods/configs" "$src/methods/mergekit" "$src/methods/models" "$dst/methods/"
cp "$src/methods/mergekit-wall-seconds.json" "$dst/methods/"
chmod -R u+w "$dst/methods"
cp -r "$src/gguf/tiny-kq" "$dst/gguf/"
cp "$src/gguf/llamacpp-quantized.json" "$src/gguf/tiny-kq-Q4_K_M.gguf" "$src/gguf/tiny-kq-Q8_0.gguf" "$dst/gguf/"
chmod -R u+w "$dst/gguf"
# transformers' and llama.cpp's logits and greedy continuations (crates/llama/tests).
cp "$src"/infer/*.json "$dst/infer/"
chmod -R u+w "$dst/infer"
echo "fixtures copied into $dst"
