#!/usr/bin/env python3
"""Opens GGUF files written by amalgam with llama.cpp's own Python reader (the `gguf`
package) and checks the metadata types llama.cpp requires: integer hyperparameters
UINT32, floats FLOAT32, the token list strings, token types INT32. Prints one line per
file and a closing 'N passed, N failed' line; exits non-zero on any failure."""
import sys

from gguf import GGUFReader, GGUFValueType

U32_KEYS = ["block_count", "context_length", "embedding_length", "feed_forward_length",
            "attention.head_count", "attention.head_count_kv", "rope.dimension_count"]
F32_KEYS = ["rope.freq_base", "attention.layer_norm_rms_epsilon"]


def check(path):
    reader = GGUFReader(path)
    fields = reader.fields
    problems = []

    def expect(key, vtype):
        field = fields.get(key)
        if field is None:
            problems.append(f"{key} missing")
        elif field.types[0] != vtype:
            problems.append(f"{key} is {field.types[0].name}, llama.cpp needs {vtype.name}")

    split_no = fields.get("split.no")
    if split_no is not None and int(split_no.parts[-1][0]) > 0:
        # Later parts of a split file carry only the split keys and their tensors.
        for key in ["split.count", "split.tensors.count"]:
            if key not in fields:
                problems.append(f"{key} missing")
        return problems, len(reader.tensors)
    arch = bytes(fields["general.architecture"].parts[-1]).decode()
    for key in U32_KEYS:
        expect(f"{arch}.{key}", GGUFValueType.UINT32)
    for key in F32_KEYS:
        expect(f"{arch}.{key}", GGUFValueType.FLOAT32)
    expect("general.file_type", GGUFValueType.UINT32)
    if "tokenizer.ggml.tokens" in fields:
        tokens = fields["tokenizer.ggml.tokens"]
        if tokens.types != [GGUFValueType.ARRAY, GGUFValueType.STRING]:
            problems.append(f"tokenizer.ggml.tokens is {tokens.types}")
        types = fields["tokenizer.ggml.token_type"]
        if types.types != [GGUFValueType.ARRAY, GGUFValueType.INT32]:
            problems.append(f"tokenizer.ggml.token_type is {types.types}")
        embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
        if embd is not None and len(tokens.data) != int(embd.shape[1]):
            problems.append(f"{len(tokens.data)} tokens for {embd.shape[1]} embedding rows")
    for tensor in reader.tensors:
        if tensor.data.size == 0:
            problems.append(f"tensor {tensor.name} has no data")
    return problems, len(reader.tensors)


def main(paths):
    failed = 0
    for path in paths:
        try:
            problems, count = check(path)
        except Exception as error:  # the reader itself refusing the file is a failure
            problems, count = [f"gguf could not read it: {error!r}"], 0
        if problems:
            failed += 1
            print(f"FAIL {path}: " + "; ".join(problems))
        else:
            print(f"ok   {path}: {count} tensors")
    print(f"{len(paths) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
