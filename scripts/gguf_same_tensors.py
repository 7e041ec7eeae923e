#!/usr/bin/env python3
"""Whether two GGUF files hold the same tensors: the same names, types, shapes and data
bytes, whatever their order in the file or the metadata beside them. Prints `same`, or
`differ` with the first few names that do; exits non-zero when they differ. Used by
scripts/bench-merge to hold amalgam's quantization beside llama-quantize's (which keeps
its input's metadata order, tensor order and general.name, where amalgam writes
llama.cpp's converter order and names the model after the output)."""
import sys

from gguf import GGUFReader


def tensors(path):
    return {t.name: (int(t.tensor_type), tuple(int(d) for d in t.shape), t.data.tobytes())
            for t in GGUFReader(path).tensors}


ours, theirs = tensors(sys.argv[1]), tensors(sys.argv[2])
differ = sorted(n for n in ours.keys() | theirs.keys() if ours.get(n) != theirs.get(n))
print("same" if not differ else f"differ ({len(differ)}: {', '.join(differ[:3])})")
sys.exit(1 if differ else 0)
