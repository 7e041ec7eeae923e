#!/usr/bin/env python3
"""Makes tests/data/vocab: a tiny model `wide` (the methods fixture ft_a with two added tokens,
ids 512 and 513, and their embedding and lm_head rows) and mergekit 0.1.5's merges of the
methods fixture `base` with it under several tokenizer settings.

Run by scripts/make-goldens with the mergekit virtualenv's python; not part of CI.
Configs name models by relative path: run them in tests/data/vocab/models."""
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from common import ROOT, check, fresh_set, mergekit

MODELS = os.path.join(ROOT, "tests/data/methods/models")
OUT = os.path.join(ROOT, "tests/data/vocab")
NEW = ["<tool>", "<|extra|>"]

# Each case: the tokenizer part of a linear merge of base and wide (weight 1 each).
CASES = {
    "union-pad8": "tokenizer:\n  source: union\n  pad_to_multiple_of: 8\n",
    "base-tokens": (
        "tokenizer:\n  source: base\n  tokens:\n"
        '    "<|eot_id|>": {source: {kind: zero}, force: true}\n'
        '    "<|begin_of_text|>": {source: {kind: model_token, model: wide, token_id: 513}}\n'
    ),
    "wide-vocab": "tokenizer:\n  source: wide\n",
    "tokenizer-source-union": "tokenizer_source: union\n",
}


def make_wide(path):
    """ft_a with rows 512 and 513 appended to both vocabulary matrices."""
    shutil.copytree(os.path.join(MODELS, "ft_a"), path)
    generator = torch.Generator().manual_seed(512)
    for shard in sorted(f for f in os.listdir(path) if f.endswith(".safetensors")):
        tensors = load_file(os.path.join(path, shard))
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            if name in tensors:
                old = tensors[name]
                extra = torch.randn(2, old.shape[1], generator=generator) * 0.02
                tensors[name] = torch.cat([old, extra.to(old.dtype)]).contiguous()
        save_file(tensors, os.path.join(path, shard), metadata={"format": "pt"})
    index_path = os.path.join(path, "model.safetensors.index.json")
    index = json.load(open(index_path))
    index["metadata"]["total_size"] += 2 * 2 * 64 * 2
    json.dump(index, open(index_path, "w"), indent=2)
    config_path = os.path.join(path, "config.json")
    config = json.load(open(config_path))
    config["vocab_size"] = 514
    json.dump(config, open(config_path, "w"), indent=2)
    tokenizer_path = os.path.join(path, "tokenizer.json")
    tokenizer = json.load(open(tokenizer_path))
    for i, token in enumerate(NEW):
        tokenizer["added_tokens"].append({
            "id": 512 + i, "content": token, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": i == 1,
        })
    json.dump(tokenizer, open(tokenizer_path, "w"), ensure_ascii=False)


def main():
    work = fresh_set(OUT)
    shutil.copytree(os.path.join(MODELS, "base"), os.path.join(work, "base"))
    make_wide(os.path.join(work, "wide"))
    for case, section in CASES.items():
        config = os.path.join(OUT, "configs", f"{case}.yml")
        with open(config, "w") as f:
            f.write(
                "merge_method: linear\nbase_model: base\ndtype: bfloat16\nmodels:\n"
                "  - {model: base, parameters: {weight: 1}}\n"
                "  - {model: wide, parameters: {weight: 1}}\n" + section
            )
        target = os.path.join(OUT, "mergekit", case)
        tmp = target + ".tmp"
        check(mergekit(config, tmp, work, "--random-seed", "42"))
        os.makedirs(target)
        for name in sorted(os.listdir(tmp)):
            if name.endswith((".safetensors", ".json")):
                shutil.copy(os.path.join(tmp, name), target)
        shutil.rmtree(tmp)
        print(case)
    # base is the methods fixture: linked, not copied.
    shutil.rmtree(os.path.join(work, "base"))
    os.symlink("../../methods/models/base", os.path.join(work, "base"))
    with open(os.path.join(OUT, "MADE-WITH"), "w") as f:
        f.write(
            f"Made by scripts/make-goldens (scripts/goldens/vocab.py): mergekit 0.1.5, torch "
            f"{torch.__version__}, CPU.\nmergekit-yaml configs/CASE.yml OUT --random-seed 42 "
            "--no-write-model-card,\nrun in models/ (base links to the methods fixture; wide is ft_a with "
            "the tokens\n<tool> and <|extra|> at ids 512 and 513); mergekit/CASE holds OUT's "
            "tensors and JSON files.\n"
        )


main()
