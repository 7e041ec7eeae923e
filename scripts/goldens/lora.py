#!/usr/bin/env python3
"""Makes tests/data/lora: PEFT LoRA adapters for the methods fixture `base`, saved by PEFT
itself (so the keys are PEFT's real layout, including the embedding's saved `base_layer`),
and mergekit 0.1.5's passthrough merge of `base+ADAPTER` for each.

Cases: `f32-factors` (PEFT's default float32 adapter weights) and `bf16-rslora` (weights
cast to bfloat16 before saving, rsLoRA scaling). Both use a rank and an alpha pattern,
update q_proj, v_proj and the embeddings, and save lm_head whole (modules_to_save).

Run by scripts/make-goldens with the mergekit virtualenv's python; not part of CI.
Configs name models by relative path: run them in tests/data/lora/models."""
import json
import os
import shutil

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from common import ROOT, check, fresh_set, mergekit

BASE = os.path.join(ROOT, "tests/data/methods/models/base")
OUT = os.path.join(ROOT, "tests/data/lora")
CASES = {"f32-factors": (torch.float32, False), "bf16-rslora": (torch.bfloat16, True)}


def make_adapter(path, dtype, rslora, seed):
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.bfloat16)
    config = LoraConfig(
        r=4, lora_alpha=8, use_rslora=rslora,
        target_modules=["q_proj", "v_proj", "embed_tokens"],
        rank_pattern={"v_proj": 2}, alpha_pattern={"model.layers.1.self_attn.q_proj": 2},
        modules_to_save=["lm_head"], bias="none",
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_((torch.randn(p.shape, generator=generator) * 0.1).to(p.dtype))
    if dtype != torch.float32:
        peft_model = peft_model.to(dtype)
    peft_model.save_pretrained(path)
    # Keep the committed files free of machine paths and set order; PEFT's README is
    # boilerplate.
    config_path = os.path.join(path, "adapter_config.json")
    config = json.load(open(config_path))
    config["base_model_name_or_path"] = "base"
    config["target_modules"] = sorted(config["target_modules"])  # a Python set in PEFT
    json.dump(config, open(config_path, "w"), indent=2, sort_keys=True)
    os.remove(os.path.join(path, "README.md"))


def main():
    models = fresh_set(OUT)
    os.symlink("../../methods/models/base", os.path.join(models, "base"))
    for seed, (case, (dtype, rslora)) in enumerate(CASES.items()):
        make_adapter(os.path.join(models, case), dtype, rslora, seed)
        config = os.path.join(OUT, "configs", f"{case}.yml")
        with open(config, "w") as f:
            f.write(f"merge_method: passthrough\ndtype: bfloat16\nmodels:\n  - model: base+{case}\n")
        target = os.path.join(OUT, "mergekit", case)
        tmp = target + ".tmp"
        check(mergekit(config, tmp, models, "--lora-merge-cache", tmp + ".cache"))
        os.makedirs(target)
        for name in ("model.safetensors", "config.json"):
            shutil.copy(os.path.join(tmp, name), target)
        shutil.rmtree(tmp)
        shutil.rmtree(tmp + ".cache")
        print(case)
    import peft
    with open(os.path.join(OUT, "MADE-WITH"), "w") as f:
        f.write(
            f"Made by scripts/make-goldens (scripts/goldens/lora.py): mergekit 0.1.5, PEFT "
            f"{peft.__version__}, torch {torch.__version__}, CPU.\nmergekit-yaml configs/CASE.yml "
            "OUT --no-write-model-card, run in models/ (base links to the methods\nfixture; "
            "CASE is the adapter PEFT saved); mergekit/CASE holds OUT's tensors.\n"
        )


main()
