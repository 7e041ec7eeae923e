//! Tokenizer merging: two tiny models whose vocabularies differ by two added tokens,
//! merged with `union`, `base` and per-token settings; the embeddings follow
//! mergekit's row rules and the output tokenizer encodes both models' tokens.

use std::fs;
use std::path::Path;

use amalgam_tensors::DType;

use crate::common::*;

const NEW: [&str; 2] = ["<tool>", "<|extra|>"];

/// base (512 tokens) and `wide`: ft_a with tokens 512 and 513 added (rows 512 and 513
/// of its embeddings filled with [`pattern`] values).
fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_model(&data().join("methods/models/base"), &tmp.path().join("base"));
    let wide = tmp.path().join("wide");
    copy_model(&data().join("methods/models/ft_a"), &wide);
    resize_vocab(&wide, 514);
    let path = wide.join("tokenizer.json");
    let mut tokenizer = json(&path);
    let added = tokenizer["added_tokens"].as_array_mut().unwrap();
    for (i, token) in NEW.iter().enumerate() {
        added.push(serde_json::json!({"id": 512 + i, "content": token, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": i == 1}));
    }
    fs::write(&path, tokenizer.to_string()).unwrap();
    tmp
}

fn merge(dir: &Path, tokenizer: &str, out: &str) -> std::process::Output {
    let yaml = format!(
        "merge_method: linear\nbase_model: base\nmodels:\n  - {{model: base, parameters: {{weight: 1}}}}\n  - {{model: wide, parameters: {{weight: 1}}}}\n{tokenizer}\n"
    );
    fs::write(dir.join("config.yml"), yaml).unwrap();
    run(amalgam().current_dir(dir).args(["merge", "config.yml", out, "--quiet"]))
}

/// Merges into `out` with the tokenizer `section`; returns base, wide and the output.
fn merged(dir: &Path, section: &str) -> (ModelTensors, ModelTensors, ModelTensors) {
    let output = merge(dir, section, "out");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    (read_model(&dir.join("base")), read_model(&dir.join("wide")), read_model(&dir.join("out")))
}

fn rows(model: &ModelTensors, name: &str) -> Vec<Vec<f32>> {
    let (dtype, t) = &model[name];
    t.values(*dtype).chunks(t.shape[1]).map(<[f32]>::to_vec).collect()
}

/// Linear's normalized mean of two bf16 rows, rounded once to bf16.
fn mean(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(x, y)| amalgam_tensors::dtype::round_to(DType::BF16, (x + y) / 2.0))
        .collect()
}

#[test]
fn union_keeps_shared_rows_and_takes_new_tokens_from_their_model() {
    let tmp = scratch();
    let (base, wide, out) =
        merged(tmp.path(), "tokenizer:\n  source: union\n  pad_to_multiple_of: 8");
    let out_dir = tmp.path().join("out");
    assert_eq!(
        json(&out_dir.join("config.json"))["vocab_size"],
        520,
        "514 padded to a multiple of 8"
    );
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        let (b, w, o) = (rows(&base, name), rows(&wide, name), rows(&out, name));
        assert_eq!(o.len(), 520, "{name}");
        // Shared tokens: the mean of both models' own rows.
        for id in [0, 100, 511] {
            assert_eq!(o[id], mean(&b[id], &w[id]), "{name} row {id}");
        }
        // New tokens: only `wide` has them, so both aligned matrices take its row.
        for id in [512, 513] {
            assert_eq!(o[id], w[id], "{name} row {id}");
        }
        // Padding: each aligned matrix's mean real row, then merged.
        // Rows 512 and 513 of both aligned matrices are wide's.
        let real_mean = |m: &[Vec<f32>]| -> Vec<f32> {
            let rows: Vec<&Vec<f32>> = m[..512].iter().chain(&w[512..514]).collect();
            (0..64)
                .map(|c| {
                    amalgam_tensors::dtype::round_to(
                        DType::BF16,
                        (rows.iter().map(|r| f64::from(r[c])).sum::<f64>() / 514.0) as f32,
                    )
                })
                .collect()
        };
        let expected = mean(&real_mean(&b), &real_mean(&w));
        let worst = o[519].iter().zip(&expected).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-2, "{name} padding row off by {worst}");
    }

    // The tokenizer knows both models' tokens, at the ids the embeddings use.
    let tokenizer = tokenizers::Tokenizer::from_file(out_dir.join("tokenizer.json")).unwrap();
    for (i, token) in NEW.iter().enumerate() {
        assert_eq!(tokenizer.token_to_id(token), Some(512 + i as u32), "{token}");
        let encoded = tokenizer.encode(format!("hi{token}"), false).unwrap();
        assert_eq!(encoded.get_ids().last(), Some(&(512 + i as u32)), "{token}");
    }
    assert_eq!(tokenizer.token_to_id("<|eot_id|>"), Some(511));
}

#[test]
fn base_vocabulary_and_token_settings() {
    let tmp = scratch();
    let section = "tokenizer:\n  source: base\n  tokens:\n    \"<|eot_id|>\": {source: {kind: zero}, force: true}\n    \"<|begin_of_text|>\": {source: {kind: model_token, model: wide, token_id: 513}}";
    let (base, wide, out) = merged(tmp.path(), section);
    let out_dir = tmp.path().join("out");
    assert_eq!(json(&out_dir.join("config.json"))["vocab_size"], 512);
    let name = "model.embed_tokens.weight";
    let (b, w, o) = (rows(&base, name), rows(&wide, name), rows(&out, name));
    assert_eq!(o.len(), 512, "the base vocabulary: wide's extra rows dropped");
    assert_eq!(o[7], mean(&b[7], &w[7]));
    assert!(o[511].iter().all(|v| *v == 0.0), "forced zero for <|eot_id|>");
    // Not forced: both models have <|begin_of_text|>, so their own rows are used.
    assert_eq!(o[507], mean(&b[507], &w[507]));

    let bad = "tokenizer:\n  tokens:\n    \"<tool>\": {source: base}";
    let output = merge(tmp.path(), bad, "out2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("base has no token \"<tool>\""), "{stderr}");
}

#[test]
fn merged_vocabulary_reaches_a_gguf_output() {
    let tmp = scratch();
    let section = "tokenizer:\n  source: union\n  pad_to_multiple_of: 8";
    let output = merge(tmp.path(), section, "out.gguf");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let file = amalgam_gguf::GgufFile::open(&tmp.path().join("out.gguf")).unwrap();
    let Some(amalgam_gguf::Value::Array(_, tokens)) = file.header.get("tokenizer.ggml.tokens")
    else {
        panic!("no token list")
    };
    assert_eq!(tokens.len(), 520, "one token per embedding row, padding included");
    for (i, token) in NEW.iter().enumerate() {
        assert_eq!(tokens[512 + i], amalgam_gguf::Value::String((*token).into()));
    }
}

#[test]
fn damaged_tokenizers_are_clear_errors() {
    let tmp = scratch();
    let section = "tokenizer_source: union";
    fs::write(tmp.path().join("wide/tokenizer.json"), "{\"model\": ").unwrap();
    let output = merge(tmp.path(), section, "out");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model wide: tokenizer.json does not parse as JSON"), "{stderr}");

    let huge = r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": 4000000000, "content": "x", "special": true}]}"#;
    fs::write(tmp.path().join("wide/tokenizer.json"), huge).unwrap();
    // A union skips ids past a model's vocab_size; a model's own vocabulary does not.
    let output = merge(tmp.path(), "tokenizer:\n  source: wide", "out");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ids up to 4000000000; its tokenizer.json is damaged"), "{stderr}");
    assert!(!tmp.path().join("out").exists());
}

/// Merges `tests/data/vocab/configs/<case>.yml` and compares with mergekit 0.1.5's
/// output (made by `scripts/make-goldens`): the tensors bit for bit, config.json and
/// tokenizer.json as JSON, and tokenizer_config.json apart from what transformers 5
/// rewrites when mergekit saves it (amalgam keeps the source's, which transformers 4
/// and 5 both load).
fn check_against_mergekit(case: &str) {
    let (_tmp, out) =
        merge_in(&data().join("vocab/models"), &data().join(format!("vocab/configs/{case}.yml")));
    let golden = data().join(format!("vocab/mergekit/{case}"));
    assert_same_tensors(case, &read_model(&out), &read_model(&golden));
    assert_same_config(case, &out.join("config.json"), &golden.join("config.json"));
    assert_eq!(
        json(&out.join("tokenizer.json")),
        json(&golden.join("tokenizer.json")),
        "{case}: tokenizer.json"
    );
    let ours = json(&out.join("tokenizer_config.json"));
    let theirs = json(&golden.join("tokenizer_config.json"));
    let rewritten = ["tokenizer_class", "backend", "is_local", "local_files_only", "chat_template"];
    for (key, value) in theirs.as_object().unwrap() {
        if !rewritten.contains(&key.as_str()) {
            assert_eq!(&ours[key], value, "{case}: tokenizer_config.json {key}");
        }
    }
}

#[test]
fn union_with_padding_equals_mergekit() {
    check_against_mergekit("union-pad8");
}

#[test]
fn base_vocabulary_with_token_settings_equals_mergekit() {
    check_against_mergekit("base-tokens");
}

#[test]
fn a_models_vocabulary_equals_mergekit() {
    check_against_mergekit("wide-vocab");
}

#[test]
fn tokenizer_source_union_equals_mergekit() {
    check_against_mergekit("tokenizer-source-union");
}
