//! LoRA inputs (`model+adapter`): a PEFT adapter built here is applied as the base is
//! read — low-rank updates with rank and alpha patterns, an embedding update and a
//! `modules_to_save` replacement — and kinds amalgam cannot apply are refused.

use std::fs;
use std::path::Path;

use amalgam_tensors::DType;
use amalgam_tensors::dtype::round_to;
use serde_json::json;

use crate::common::*;

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A low-rank factor pair for `module`: A [rank, cols], B [rows, rank], small values.
fn factors(module: &str, rows: usize, cols: usize, rank: usize, seed: usize) -> Tensors {
    let small = |seed, shape: &[usize]| pattern(seed, shape).iter().map(|v| v * 0.1).collect();
    let key = format!("base_model.model.{module}");
    vec![
        (format!("{key}.lora_A.weight"), vec![rank, cols], small(seed, &[rank, cols])),
        (format!("{key}.lora_B.weight"), vec![rows, rank], small(seed + 1, &[rows, rank])),
    ]
}

fn write_adapter(dir: &Path, config: serde_json::Value, tensors: &Tensors) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    write_safetensors(&dir.join("adapter_model.safetensors"), tensors);
}

/// One of the adapter's tensors by key.
fn by_key<'a>(tensors: &'a Tensors, key: &str) -> &'a [f32] {
    &tensors.iter().find(|(n, _, _)| n == key).unwrap().2
}

/// bf16's spacing at `x`: results may differ from an exact sum by one rounding step.
fn bf16_ulp(x: f64) -> f64 {
    2f64.powi(x.abs().max(1e-30).log2().floor() as i32 - 7)
}

#[test]
fn adapter_is_applied_as_the_base_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let base_dir = tmp.path().join("base");
    copy_model(&data().join("methods/models/base"), &base_dir);
    let mut tensors = Vec::new();
    for layer in 0..2 {
        let attn = format!("model.layers.{layer}.self_attn");
        tensors.extend(factors(&format!("{attn}.q_proj"), 64, 64, 4, 10 * layer));
        tensors.extend(factors(&format!("{attn}.v_proj"), 32, 64, 2, 10 * layer + 5));
    }
    let small = |seed, shape: &[usize]| pattern(seed, shape).iter().map(|v| v * 0.1).collect();
    tensors.push((
        "base_model.model.model.embed_tokens.lora_embedding_A".into(),
        vec![4, 512],
        small(40, &[4, 512]),
    ));
    tensors.push((
        "base_model.model.model.embed_tokens.lora_embedding_B".into(),
        vec![64, 4],
        small(41, &[64, 4]),
    ));
    tensors.push((
        "base_model.model.lm_head.weight".into(),
        vec![512, 64],
        pattern(42, &[512, 64]),
    ));
    let config = json!({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": false,
        "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"model.layers.1.self_attn.q_proj": 2},
        "target_modules": ["q_proj", "v_proj", "embed_tokens"], "modules_to_save": ["lm_head"],
        "bias": "none", "use_dora": false,
    });
    write_adapter(&tmp.path().join("adapter"), config, &tensors);
    fs::write(
        tmp.path().join("config.yml"),
        "merge_method: passthrough\nmodels:\n  - model: base+adapter\n",
    )
    .unwrap();
    let output = run_ok(amalgam().current_dir(tmp.path()).args([
        "merge",
        "config.yml",
        "out",
        "--quiet",
        "--lora-merge-cache",
        "/tmp/unused",
    ]));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--lora-merge-*: not needed"));

    let (base, out) = (read_model(&base_dir), read_model(&tmp.path().join("out")));
    let factor = |key: &str| by_key(&tensors, key);
    // (weight, A key, B key, scale, embedding): scale = alpha / r with the patterns applied.
    let updates = [
        ("model.layers.0.self_attn.q_proj", 8.0 / 4.0, false),
        ("model.layers.1.self_attn.q_proj", 2.0 / 4.0, false),
        ("model.layers.0.self_attn.v_proj", 8.0 / 2.0, false),
        ("model.layers.1.self_attn.v_proj", 8.0 / 2.0, false),
        ("model.embed_tokens", 8.0 / 4.0, true),
    ];
    for (module, scale, embedding) in updates {
        let name = format!("{module}.weight");
        let (dtype, merged) = &out[&name];
        assert_eq!(*dtype, DType::BF16, "{name} keeps the base dtype");
        let w = base[&name].1.values(DType::BF16);
        let got = merged.values(DType::BF16);
        let cols = merged.shape[1];
        let (a_key, b_key) = if embedding {
            (
                format!("base_model.model.{module}.lora_embedding_A"),
                format!("base_model.model.{module}.lora_embedding_B"),
            )
        } else {
            (
                format!("base_model.model.{module}.lora_A.weight"),
                format!("base_model.model.{module}.lora_B.weight"),
            )
        };
        let (a, b) = (factor(&a_key), factor(&b_key));
        let rank = b.len() / if embedding { cols } else { merged.shape[0] };
        let a_cols = a.len() / rank;
        let (mut worst, mut changed) = (0f64, 0usize);
        for (e, (g, w)) in got.iter().zip(&w).enumerate() {
            let (row, col) = (e / cols, e % cols);
            let delta: f64 = (0..rank)
                .map(|k| {
                    if embedding {
                        f64::from(b[col * rank + k]) * f64::from(a[k * a_cols + row])
                    } else {
                        f64::from(b[row * rank + k]) * f64::from(a[k * a_cols + col])
                    }
                })
                .sum();
            // PEFT rounds an embedding's update to the weight's dtype before adding it.
            let update = if embedding {
                f64::from(round_to(DType::BF16, (scale * delta) as f32))
            } else {
                scale * delta
            };
            let want = f64::from(*w) + update;
            worst = worst.max((f64::from(*g) - want).abs() / bf16_ulp(want));
            changed += usize::from(g != w);
        }
        assert!(worst <= 1.0, "{name}: {worst} bf16 steps from W + scale·B·A");
        assert!(changed > got.len() / 2, "{name}: only {changed} elements changed");
    }
    // modules_to_save: the adapter's lm_head, cast to the base dtype.
    let replaced: Vec<f32> = factor("base_model.model.lm_head.weight")
        .iter()
        .map(|v| round_to(DType::BF16, *v))
        .collect();
    assert_eq!(out["lm_head.weight"].1.values(DType::BF16), replaced);
    // Everything else is the base, byte for byte.
    for name in [
        "model.layers.2.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.norm.weight",
    ] {
        assert_eq!(out[name].1.bytes, base[name].1.bytes, "{name}");
    }
}

#[test]
fn adapters_amalgam_cannot_apply_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_model(&data().join("methods/models/base"), &tmp.path().join("base"));
    fs::write(
        tmp.path().join("config.yml"),
        "merge_method: passthrough\nmodels:\n  - model: base+adapter\n",
    )
    .unwrap();
    let fails = |config: serde_json::Value, tensors: &Tensors, expected: &str| {
        let adapter = tmp.path().join("adapter");
        let _ = fs::remove_dir_all(&adapter);
        write_adapter(&adapter, config, tensors);
        let output =
            run(amalgam().current_dir(tmp.path()).args(["merge", "config.yml", "out", "--quiet"]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "expected {expected:?} in {stderr}");
        assert!(!tmp.path().join("out").exists());
    };
    let q = factors("model.layers.0.self_attn.q_proj", 64, 64, 4, 0);
    fails(
        json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true}),
        &q,
        "DoRA adapter",
    );
    fails(json!({"peft_type": "IA3"}), &q, "peft_type is IA3");
    // Factors for a 32-wide model do not fit this 64-wide one.
    let narrow = factors("model.layers.0.self_attn.q_proj", 32, 32, 4, 0);
    fails(
        json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8}),
        &narrow,
        "do not fit the base weight [64, 64]",
    );
    let stray = factors("model.layers.0.self_attn.qkv_proj", 64, 64, 4, 0);
    fails(
        json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8}),
        &stray,
        "changes model.layers.0.self_attn.qkv_proj.weight, which",
    );
    fails(
        json!({"peft_type": "LORA", "r": 8, "lora_alpha": 8}),
        &q,
        "rank 4 but adapter_config.json gives it rank 8",
    );
}

#[test]
fn a_gguf_base_with_an_adapter_gives_its_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    run_ok(
        amalgam()
            .arg("quantize")
            .arg(data().join("methods/models/base"))
            .arg(tmp.path().join("base.gguf"))
            .args(["--quant", "F32", "--quiet"]),
    );
    let q = factors("model.layers.0.self_attn.q_proj", 64, 64, 4, 0);
    write_adapter(
        &tmp.path().join("adapter"),
        json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8}),
        &q,
    );
    fs::write(
        tmp.path().join("config.yml"),
        "merge_method: passthrough\nmodels:\n  - model: base.gguf+adapter\n",
    )
    .unwrap();
    run_ok(amalgam().current_dir(tmp.path()).args(["merge", "config.yml", "out", "--quiet"]));
    let out = tmp.path().join("out");
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(name).is_file(), "{name} is missing from the merge of a GGUF base");
    }
    let vocab = json(&out.join("tokenizer.json"))["model"]["vocab"].as_object().unwrap().len();
    let source = json(&data().join("methods/models/base/tokenizer.json"))["model"]["vocab"]
        .as_object()
        .unwrap()
        .len();
    assert_eq!(vocab, source);
}

/// Merges `tests/data/lora/configs/<case>.yml` (an adapter PEFT saved, applied to the
/// methods fixture base) and compares every tensor with mergekit 0.1.5's, which merges
/// through PEFT's `merge_and_unload` (made by `scripts/make-goldens`).
fn check_against_mergekit(case: &str) {
    let (_tmp, out) =
        merge_in(&data().join("lora/models"), &data().join(format!("lora/configs/{case}.yml")));
    let theirs = read_model(&data().join(format!("lora/mergekit/{case}")));
    assert_same_tensors(case, &read_model(&out), &theirs);
    let base = read_model(&data().join("methods/models/base"));
    let changed = theirs.iter().filter(|(name, (_, t))| t.bytes != base[*name].1.bytes).count();
    // 12 attention projections, the embeddings and lm_head.
    assert_eq!(changed, 14, "{case}: tensors the adapter changed");
}

#[test]
fn float32_adapter_equals_mergekit_with_peft() {
    check_against_mergekit("f32-factors");
}

#[test]
fn bfloat16_rslora_adapter_equals_mergekit_with_peft() {
    check_against_mergekit("bf16-rslora");
}
