//! `amalgam quantize` and `amalgam inspect` end to end: tiny-kq to every llama.cpp mixture
//! through the binary, read back with amalgam's GGUF reader, against llama.cpp's bytes.

use amalgam_gguf::{GgufFile, Value};
use sha2::{Digest, Sha256};

use crate::common::*;

#[test]
fn quantize_matches_llama_cpp_for_every_mixture() {
    let golden = json(&data().join("gguf/llamacpp-quantized.json"));
    let tmp = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for (mixture, expected) in golden["types"].as_object().unwrap() {
        let out = tmp.path().join(format!("tiny-{mixture}.gguf"));
        run_ok(amalgam().arg("quantize").arg(data().join("gguf/tiny-kq")).arg(&out).args([
            "--quant",
            &mixture.to_lowercase(),
            "--quiet",
        ]));
        let file = GgufFile::open(&out).unwrap();
        assert_eq!(file.header.tensors.len(), expected.as_object().unwrap().len(), "{mixture}");
        for t in &file.header.tensors {
            let want = &expected[&t.name];
            let sha: String =
                Sha256::digest(file.data(t)).iter().map(|b| format!("{b:02x}")).collect();
            if want["type"] != t.ty.name()
                || want["shape"] != serde_json::json!(t.dims)
                || want["sha256"] != sha.as_str()
            {
                problems.push(format!("{mixture} {}: {} {:?}", t.name, t.ty, t.dims));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} tensors differ from llama.cpp:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn metadata_has_the_types_llama_cpp_requires() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny.gguf");
    run_ok(amalgam().arg("quantize").arg(data().join("gguf/tiny-kq")).arg(&out).args([
        "--quant",
        "Q8_0",
        "--quiet",
        "--tokenizer-pre",
        "llama-bpe",
    ]));
    let file = GgufFile::open(&out).unwrap();
    let get = |k: &str| file.header.get(k).unwrap_or_else(|| panic!("{k} missing")).clone();
    for key in [
        "llama.block_count",
        "llama.context_length",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.dimension_count",
        "general.file_type",
        "general.quantization_version",
        "tokenizer.ggml.bos_token_id",
    ] {
        assert!(matches!(get(key), Value::U32(_)), "{key} must be u32: {:?}", get(key));
    }
    for key in ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"] {
        assert!(matches!(get(key), Value::F32(_)), "{key} must be f32");
    }
    assert_eq!(get("llama.rope.freq_base"), Value::F32(500000.0));
    assert_eq!(get("general.file_type"), Value::U32(7));
    assert_eq!(get("tokenizer.ggml.pre"), Value::String("llama-bpe".into()));
    assert_eq!(get("tokenizer.ggml.tokens").as_array().unwrap().len(), 512);
    assert!(get("tokenizer.chat_template").as_str().unwrap().contains("start_header_id"));
}

#[test]
fn inspect_shows_metadata_and_tensors() {
    let output = run_ok(amalgam().arg("inspect").arg(data().join("gguf/tiny-kq-Q4_K_M.gguf")));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("GGUF v3, 23 metadata entries, 75 tensors"), "{text}");
    assert!(text.contains("output.weight") && text.contains("Q6_K"), "{text}");
    let output = run_ok(amalgam().arg("inspect").arg(data().join("gguf/tiny-kq")));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("model.layers.7.mlp.down_proj.weight") && text.contains("BF16"),
        "{text}"
    );
}

#[test]
fn unknown_quantization_lists_the_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(amalgam()
        .arg("quantize")
        .arg(data().join("gguf/tiny-kq"))
        .arg(tmp.path().join("x.gguf"))
        .args(["--quant", "q4_k_x"]));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Q4_K_M") && stderr.contains("q4_k_x"), "{stderr}");
    assert!(!tmp.path().join("x.gguf").exists());
}

/// The pre-tokenizer written for a model folder, quantized without `--tokenizer-pre`.
fn detected_pre(folder: &std::path::Path, out: &std::path::Path) -> (String, String) {
    let output = run_ok(
        amalgam()
            .arg("quantize")
            .arg(folder)
            .arg(out)
            .args(["--quant", "q8_0", "--quiet", "--force"]),
    );
    let file = GgufFile::open(out).unwrap();
    let pre = file.header.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap().to_owned();
    (pre, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn pre_tokenizer_is_found_by_probe_hash_then_by_regex() {
    let tmp = tempfile::tempdir().unwrap();
    // The real Llama 3 tokenizer (scripts/fetch-llama3-tokenizer; scripts/test runs it).
    let llama3 =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/llama3/tokenizer.json");
    assert!(llama3.exists(), "{} is missing: run scripts/fetch-llama3-tokenizer", llama3.display());
    let model = tmp.path().join("with-llama3-tokenizer");
    copy_model(&data().join("gguf/tiny-kq"), &model);
    std::fs::copy(&llama3, model.join("tokenizer.json")).unwrap();
    let (pre, stderr) = detected_pre(&model, &tmp.path().join("a.gguf"));
    assert_eq!(pre, "llama-bpe");
    assert!(!stderr.contains("guessed"), "{stderr}");

    // SmolLM2's tokenizer, as rebuilt from its GGUF.
    let smol = tmp.path().join("smollm2");
    let gguf = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    run_ok(amalgam().arg("convert").arg(&gguf).arg(&smol).arg("--quiet"));
    assert_eq!(detected_pre(&smol, &tmp.path().join("b.gguf")).0, "smollm");

    // The tiny fixture's plain GPT-2 byte-level tokenizer has no known hash: the regex
    // decides, with a warning.
    let (pre, stderr) = detected_pre(&data().join("gguf/tiny-kq"), &tmp.path().join("c.gguf"));
    assert_eq!(pre, "gpt-2");
    assert!(stderr.contains("guessed") && stderr.contains("--tokenizer-pre"), "{stderr}");
}

#[test]
fn quantize_takes_a_gguf_and_undoes_its_quantization_first() {
    let tmp = tempfile::tempdir().unwrap();
    let input = data().join("gguf/tiny-kq-Q8_0.gguf");
    let out = tmp.path().join("requantized.gguf");
    run_ok(amalgam().arg("quantize").arg(&input).arg(&out).args(["--quant", "Q4_K_M", "--quiet"]));
    let (a, b) = (GgufFile::open(&input).unwrap(), GgufFile::open(&out).unwrap());
    let golden = json(&data().join("gguf/llamacpp-quantized.json"));
    for t in &b.header.tensors {
        assert_eq!(
            golden["types"]["Q4_K_M"][&t.name]["type"],
            t.ty.name(),
            "{} follows the Q4_K_M rules",
            t.name
        );
    }
    for (key, value) in a.header.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        assert_eq!(b.header.get(key), Some(value), "{key} carried over");
    }
    assert_eq!(b.header.get("general.file_type"), Some(&Value::U32(15)));
}

/// A SentencePiece model of 512 pieces, as Llama 2 and Mistral ship: unk, bos, eos, the
/// 256 byte pieces, then words with descending scores.
fn sentencepiece_model() -> amalgam_gguf::sentencepiece::SpModel {
    use amalgam_gguf::sentencepiece::{Piece, SpModel};
    let mut pieces = vec![
        Piece { text: "<unk>".into(), score: 0.0, kind: 2 },
        Piece { text: "<s>".into(), score: 0.0, kind: 3 },
        Piece { text: "</s>".into(), score: 0.0, kind: 3 },
    ];
    pieces.extend((0..256).map(|b| Piece { text: format!("<0x{b:02X}>"), score: 0.0, kind: 6 }));
    pieces.extend((pieces.len()..512).map(|i| Piece {
        text: format!("▁w{i}"),
        score: -(i as f32),
        kind: 1,
    }));
    SpModel { pieces, add_dummy_prefix: true }
}

#[test]
fn sentencepiece_tokenizers_convert_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mistral-like");
    copy_model(&data().join("gguf/tiny-kq"), &model);
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    std::fs::write(
        model.join("tokenizer.model"),
        amalgam_gguf::sentencepiece::write(&sentencepiece_model()),
    )
    .unwrap();
    std::fs::write(
        model.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true}"#,
    )
    .unwrap();
    let out = tmp.path().join("sp.gguf");
    run_ok(amalgam().arg("quantize").arg(&model).arg(&out).args(["--quant", "Q8_0", "--quiet"]));
    let file = GgufFile::open(&out).unwrap();
    let get = |k: &str| file.header.get(k).unwrap_or_else(|| panic!("{k}")).clone();
    assert_eq!(get("tokenizer.ggml.model"), Value::String("llama".into()));
    assert!(file.header.get("tokenizer.ggml.pre").is_none(), "no pre-tokenizer for SentencePiece");
    assert_eq!(get("tokenizer.ggml.tokens").as_array().unwrap().len(), 512);
    assert_eq!(get("tokenizer.ggml.scores").as_array().unwrap()[300], Value::F32(-300.0));
    assert_eq!(get("tokenizer.ggml.token_type").as_array().unwrap()[3], Value::I32(6));
    assert_eq!(get("tokenizer.ggml.bos_token_id"), Value::U32(1));
    assert_eq!(get("tokenizer.ggml.eos_token_id"), Value::U32(2));
    assert_eq!(get("tokenizer.ggml.unknown_token_id"), Value::U32(0));
    assert_eq!(get("tokenizer.ggml.add_bos_token"), Value::Bool(true));
    assert_eq!(get("tokenizer.ggml.add_space_prefix"), Value::Bool(true));

    let back = tmp.path().join("back");
    run_ok(amalgam().arg("convert").arg(&out).arg(&back).arg("--quiet"));
    let rebuilt =
        amalgam_gguf::sentencepiece::parse(&std::fs::read(back.join("tokenizer.model")).unwrap())
            .unwrap();
    assert!(rebuilt == sentencepiece_model(), "tokenizer.model round trip");
    let config = json(&back.join("tokenizer_config.json"));
    assert_eq!(config["bos_token"], "<s>");
    assert_eq!(config["tokenizer_class"], "LlamaTokenizer");
}

#[test]
fn broken_gguf_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(data().join("gguf/tiny-kq-Q8_0.gguf")).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    for args in [vec!["inspect"], vec!["convert"], vec!["quantize"]] {
        let mut cmd = amalgam();
        cmd.args(&args).arg(&cut);
        if args[0] != "inspect" {
            cmd.arg(tmp.path().join("out.x")).args(if args[0] == "quantize" {
                vec!["--quant", "q8_0"]
            } else {
                vec![]
            });
        }
        let output = run(&mut cmd);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cut.gguf") && stderr.contains("truncated"), "{args:?}: {stderr}");
        assert!(!tmp.path().join("out.x").exists());
    }
    let not_llama = tmp.path().join("other.gguf");
    let mut bytes = good.clone();
    let at = bytes.windows(5).position(|w| w == b"llama").unwrap();
    bytes[at..at + 5].copy_from_slice(b"gemma");
    std::fs::write(&not_llama, &bytes).unwrap();
    let output = run(amalgam().arg("convert").arg(&not_llama).arg(tmp.path().join("o")));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Llama-architecture GGUF files only"));
}

#[test]
fn dry_run_plans_a_gguf_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("planned.gguf");
    let output = run_ok(
        amalgam()
            .env("HF_HUB_CACHE", seed_hub())
            .args(["merge", "--dry-run"])
            .arg(data().join("seed/seed-120b.yml"))
            .arg(&out)
            .args(["--quant", "Q4_K_M"]),
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("layers   140") && text.contains("planned.gguf"), "{text}");
    assert!(!out.exists());
}
