#!/usr/bin/env python3
"""Makes tests/data/architectures: for each architecture amalgam has a table for, a tiny
model built by transformers itself (its own config class and module names, random weights
in bfloat16) and mergekit 0.1.5's passthrough frankenmerge of it (layers 0-2 then 1-3, so
six layers from four). Where the model's config has per-layer lists, mergekit writes the
tensors and then fails on config.json; mergekit/ARCH/mergekit-error.txt says so.

Run by scripts/make-goldens with the mergekit virtualenv's python; not part of CI.
Configs name models by relative path: run them in tests/data/architectures/models."""
import os
import shutil

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

from common import ROOT, fresh_set, mergekit

OUT = os.path.join(ROOT, "tests/data/architectures")
SMALL = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, vocab_size=128, max_position_embeddings=256,
)
# model_type -> extra config settings that make its per-layer features visible.
ARCHITECTURES = {
    "mistral": {"sliding_window": 64},
    "qwen2": {"use_sliding_window": True, "sliding_window": 64, "max_window_layers": 2},
    "qwen3": {"use_sliding_window": True, "sliding_window": 64, "max_window_layers": 2},
    "gemma": {},
    "gemma2": {"sliding_window": 64},
    "gemma3_text": {"sliding_window": 64, "sliding_window_pattern": 2},
    "phi3": {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
}


def make_model(path, model_type, extra, seed):
    config = AutoConfig.for_model(model_type, **SMALL, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.randn(p.shape) * 0.05).to(p.dtype))
    model.save_pretrained(path)


def main():
    models = fresh_set(OUT)
    for seed, (model_type, extra) in enumerate(ARCHITECTURES.items()):
        make_model(os.path.join(models, model_type), model_type, extra, seed)
        config = os.path.join(OUT, "configs", f"{model_type}.yml")
        with open(config, "w") as f:
            f.write(
                "slices:\n"
                f"  - sources: [{{model: {model_type}, layer_range: [0, 3]}}]\n"
                f"  - sources: [{{model: {model_type}, layer_range: [1, 4]}}]\n"
                "merge_method: passthrough\ndtype: bfloat16\n"
            )
        target = os.path.join(OUT, "mergekit", model_type)
        tmp = target + ".tmp"
        run = mergekit(config, tmp, models)
        os.makedirs(target)
        shutil.copy(os.path.join(tmp, "model.safetensors"), target)
        if run.returncode == 0:
            shutil.copy(os.path.join(tmp, "config.json"), target)
        else:
            # mergekit writes the tensors, then fails to save config.json when the
            # config's per-layer lists (layer_types) no longer match the layer count.
            error = run.stderr.strip().splitlines()[-1]
            with open(os.path.join(target, "mergekit-error.txt"), "w") as f:
                f.write(error + "\n")
        shutil.rmtree(tmp)
        print(model_type, "ok" if run.returncode == 0 else "mergekit failed on config.json")
    with open(os.path.join(OUT, "MADE-WITH"), "w") as f:
        f.write(
            f"Made by scripts/make-goldens (scripts/goldens/architectures.py): mergekit 0.1.5, "
            f"transformers {transformers.__version__}, torch {torch.__version__}, CPU.\n"
            "mergekit-yaml configs/ARCH.yml OUT --no-write-model-card, run in models/;\n"
            "mergekit/ARCH holds OUT's tensors and config.json (or mergekit's error on it).\n"
        )


main()
