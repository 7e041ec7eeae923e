//! Architectures beyond Llama: tiny Qwen3- and Gemma 2-shaped models, generated here,
//! self-merged, with per-layer config lists rebuilt through the layer mapping; and tiny
//! models transformers built for each architecture, frankenmerged as mergekit does.

use std::fs;

use serde_json::json;

use crate::common::*;

/// Per-layer weights of a tiny model (hidden 8, 2 query heads and 1 key-value head of
/// 4, MLP 16) under `suffixes`, plus the embedding and final norm.
fn tensors(layers: usize, suffixes: &[(&str, Vec<usize>)]) -> Vec<(String, Vec<usize>)> {
    let mut all = vec![("model.embed_tokens.weight".to_owned(), vec![32, 8])];
    for l in 0..layers {
        for (suffix, shape) in suffixes {
            all.push((format!("model.layers.{l}.{suffix}"), shape.clone()));
        }
    }
    all.push(("model.norm.weight".to_owned(), vec![8]));
    all
}

fn attention_and_mlp() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("input_layernorm.weight", vec![8]),
        ("self_attn.q_proj.weight", vec![8, 8]),
        ("self_attn.k_proj.weight", vec![4, 8]),
        ("self_attn.v_proj.weight", vec![4, 8]),
        ("self_attn.o_proj.weight", vec![8, 8]),
        ("post_attention_layernorm.weight", vec![8]),
        ("mlp.gate_proj.weight", vec![16, 8]),
        ("mlp.up_proj.weight", vec![16, 8]),
        ("mlp.down_proj.weight", vec![8, 16]),
    ]
}

/// Self-merges `model` with passthrough slices `ranges`; returns the output config,
/// the card and stderr.
fn self_merge(
    dir: &std::path::Path,
    ranges: &[(usize, usize)],
) -> (serde_json::Value, String, String) {
    let slices: String = ranges
        .iter()
        .map(|(a, b)| format!("- sources:\n  - {{model: model, layer_range: [{a}, {b}]}}\n"))
        .collect();
    fs::write(dir.join("config.yml"), format!("merge_method: passthrough\nslices:\n{slices}"))
        .unwrap();
    let output = run_ok(amalgam().current_dir(dir).args(["merge", "config.yml", "out", "--quiet"]));
    let card = fs::read_to_string(dir.join("out/README.md")).unwrap();
    (json(&dir.join("out/config.json")), card, String::from_utf8_lossy(&output.stderr).into())
}

#[test]
fn qwen3_self_merge_keeps_layer_types_and_window_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let mut suffixes = attention_and_mlp();
    suffixes.push(("self_attn.q_norm.weight", vec![4]));
    suffixes.push(("self_attn.k_norm.weight", vec![4]));
    let (f, s) = ("full_attention", "sliding_attention");
    let config = json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 4,
        "hidden_size": 8, "vocab_size": 32, "tie_word_embeddings": true,
        "use_sliding_window": true, "sliding_window": 16, "max_window_layers": 2,
        "layer_types": [f, f, s, s], "torch_dtype": "float32",
    });
    let model = tmp.path().join("model");
    write_model(&model, &config, &tensors(4, &suffixes));

    let (out, card, stderr) = self_merge(tmp.path(), &[(0, 3), (1, 4)]);
    assert_eq!(out["num_hidden_layers"], 6);
    // Output layers come from source layers 0, 1, 2, 1, 2, 3.
    assert_eq!(out["layer_types"], json!([f, f, s, f, s, s]));
    assert_eq!(out["max_window_layers"], 2);
    assert!(
        stderr.contains("config.json: layer_types rebuilt for the 6 output layers"),
        "{stderr}"
    );
    assert!(card.contains("### Config changes"), "{card}");

    let (source, merged) = (read_model(&model), read_model(&tmp.path().join("out")));
    assert_eq!(merged.len(), 1 + 6 * suffixes.len() + 1, "tied lm_head stays absent");
    for (out_layer, source_layer) in [(3, 1), (5, 3)] {
        for name in ["self_attn.q_norm.weight", "self_attn.k_norm.weight"] {
            let (a, b) = (
                format!("model.layers.{out_layer}.{name}"),
                format!("model.layers.{source_layer}.{name}"),
            );
            assert_eq!(merged[&a].1.bytes, source[&b].1.bytes, "{a}");
        }
    }
}

#[test]
fn gemma2_self_merge_writes_out_the_alternation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut suffixes = attention_and_mlp();
    suffixes.push(("pre_feedforward_layernorm.weight", vec![8]));
    suffixes.push(("post_feedforward_layernorm.weight", vec![8]));
    let config = json!({
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "num_hidden_layers": 4,
        "hidden_size": 8, "vocab_size": 32, "sliding_window": 16, "torch_dtype": "float32",
    });
    write_model(&tmp.path().join("model"), &config, &tensors(4, &suffixes));

    let (out, _, stderr) = self_merge(tmp.path(), &[(0, 2), (1, 4)]);
    // Source layers 0, 1, 1, 2, 3: sliding on even source layers, whatever their new index.
    let (f, s) = ("full_attention", "sliding_attention");
    assert_eq!(out["num_hidden_layers"], 5);
    assert_eq!(out["layer_types"], json!([s, f, f, s, f]));
    assert!(stderr.contains("layer_types written out for the 5 output layers"), "{stderr}");
}

/// Merges `tests/data/architectures/configs/<arch>.yml` — a frankenmerge (layers 0-2,
/// then 1-3) of a tiny model transformers built for the architecture — and compares with
/// mergekit 0.1.5 (made by `scripts/make-goldens`): the same tensors, bit for bit, and
/// the same config.json. Where the config has per-layer lists, mergekit writes the
/// tensors and then fails on config.json (its lists keep the source's length); amalgam's
/// lists must then follow the layers: output layer i takes source layer
/// [0, 1, 2, 1, 2, 3][i]'s entry.
fn check_against_mergekit(arch: &str) {
    let (_tmp, out) = merge_in(
        &data().join("architectures/models"),
        &data().join(format!("architectures/configs/{arch}.yml")),
    );
    let golden = data().join(format!("architectures/mergekit/{arch}"));
    let theirs = read_safetensors(&golden.join("model.safetensors"));
    assert_same_tensors(arch, &read_model(&out), &theirs);
    let config = json(&out.join("config.json"));
    assert_eq!(config["num_hidden_layers"], 6, "{arch}");
    if golden.join("config.json").is_file() {
        assert_same_config(arch, &out.join("config.json"), &golden.join("config.json"));
        return;
    }
    let error = fs::read_to_string(golden.join("mergekit-error.txt")).unwrap();
    assert!(error.contains("layer_types"), "{arch}: mergekit failed otherwise: {error}");
    let source = json(&data().join(format!("architectures/models/{arch}/config.json")));
    let types = source["layer_types"].as_array().unwrap();
    let expected: Vec<_> = [0, 1, 2, 1, 2, 3].iter().map(|&l| types[l].clone()).collect();
    assert_eq!(config["layer_types"], serde_json::Value::Array(expected), "{arch}: layer_types");
}

#[test]
fn architectures_built_by_transformers_merge_like_mergekit() {
    for arch in ["mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"] {
        check_against_mergekit(arch);
    }
}
