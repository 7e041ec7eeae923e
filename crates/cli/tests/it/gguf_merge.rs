//! GGUF in and out of merges: one-pass merge-to-GGUF equals merging then quantizing,
//! HF -> GGUF F32 -> HF is bit-exact, and the real SmolLM2 GGUF survives a round trip
//! through Hugging Face float32.

use std::fs;
use std::path::{Path, PathBuf};

use amalgam_gguf::{GgufFile, Value};

use crate::common::*;

fn self_merge_config(dir: &Path, model: &Path) -> PathBuf {
    let model = serde_json::to_string(&model.display().to_string()).unwrap();
    let yaml = format!(
        "slices:\n- sources:\n  - {{model: {model}, layer_range: [0, 6]}}\n- sources:\n  - {{model: {model}, layer_range: [2, 8]}}\nmerge_method: passthrough\ndtype: float16\n"
    );
    let path = dir.join("self.yml");
    fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn merging_straight_to_gguf_equals_merging_then_quantizing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = self_merge_config(tmp.path(), &data().join("gguf/tiny-kq"));
    let direct = tmp.path().join("direct.gguf");
    run_ok(amalgam().arg("merge").arg(&config).arg(&direct).args([
        "--quant",
        "Q4_K_M",
        "--quiet",
        "--tokenizer-pre",
        "llama-bpe",
    ]));
    let folder = tmp.path().join("merged");
    run_ok(amalgam().arg("merge").arg(&config).arg(&folder).arg("--quiet"));
    let two_step = tmp.path().join("two-step.gguf");
    run_ok(amalgam().arg("quantize").arg(&folder).arg(&two_step).args([
        "--quant",
        "Q4_K_M",
        "--quiet",
        "--tokenizer-pre",
        "llama-bpe",
    ]));

    let (a, b) = (gguf_tensors(&direct), gguf_tensors(&two_step));
    assert_eq!(a.len(), 3 + 12 * 9);
    let differing: Vec<&String> =
        a.iter().zip(&b).filter(|(x, y)| x != y).map(|(x, _)| &x.0).collect();
    assert!(differing.is_empty(), "one-pass and two-pass differ in {differing:?}");
    let file = GgufFile::open(&direct).unwrap();
    assert_eq!(file.header.get("llama.block_count"), Some(&Value::U32(12)));
    assert_eq!(file.header.get("general.file_type"), Some(&Value::U32(15)));
    assert!(file.header.get("tokenizer.chat_template").is_some());
}

#[test]
fn hf_to_gguf_f32_to_hf_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("f32.gguf");
    run_ok(
        amalgam()
            .arg("quantize")
            .arg(data().join("gguf/tiny-kq"))
            .arg(&gguf)
            .args(["--quant", "F32", "--quiet"]),
    );
    let back = tmp.path().join("back");
    run_ok(amalgam().arg("convert").arg(&gguf).arg(&back).args(["--dtype", "bf16", "--quiet"]));
    let original = read_model(&data().join("gguf/tiny-kq"));
    let round = read_model(&back);
    assert_eq!(original.keys().collect::<Vec<_>>(), round.keys().collect::<Vec<_>>());
    for (name, (_, t)) in &original {
        assert_eq!(round[name].1.bytes, t.bytes, "{name}");
    }
    let config = json(&back.join("config.json"));
    let source = json(&data().join("gguf/tiny-kq/config.json"));
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "max_position_embeddings",
        "rms_norm_eps",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
    ] {
        assert_eq!(config[key], source[key], "config.json {key}");
    }
    assert_eq!(config["rope_theta"], source["rope_parameters"]["rope_theta"]);
    let tok = json(&back.join("tokenizer.json"));
    let orig = json(&data().join("gguf/tiny-kq/tokenizer.json"));
    assert!(tok["model"]["vocab"] == orig["model"]["vocab"], "tokenizer.json vocab differs");
    assert!(
        tok["added_tokens"].as_array().unwrap().len() == 5,
        "the five special tokens are added tokens"
    );
    let merges = |t: &serde_json::Value| -> Vec<String> {
        t["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match m {
                serde_json::Value::Array(p) => {
                    format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
                }
                other => other.as_str().unwrap().to_owned(),
            })
            .collect()
    };
    assert!(merges(&tok) == merges(&orig), "merges differ");
    let template = json(&back.join("tokenizer_config.json"))["chat_template"].clone();
    assert_eq!(template, json(&data().join("gguf/tiny-kq/tokenizer_config.json"))["chat_template"]);
}

#[test]
fn smollm2_gguf_to_hf_float32_to_gguf_q4_1_reproduces_its_blocks() {
    let original = smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("smollm2-hf");
    run_ok(amalgam().arg("convert").arg(&original).arg(&hf).arg("--quiet"));
    let again = tmp.path().join("again.gguf");
    run_ok(amalgam().arg("quantize").arg(&hf).arg(&again).args([
        "--quant",
        "q4_1",
        "--quiet",
        "--tokenizer-pre",
        "smollm",
    ]));
    let (a, b) = (GgufFile::open(&original).unwrap(), GgufFile::open(&again).unwrap());
    assert_eq!(a.header.tensors.len(), b.header.tensors.len());
    let (mut blocks, mut bad_blocks, mut differing) = (0u64, 0u64, Vec::new());
    for t in &a.header.tensors {
        let u = b.header.tensor(&t.name).unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((u.ty, &u.dims), (t.ty, &t.dims), "{}", t.name);
        let size = t.ty.type_size();
        let (x, y) = (a.data(t), b.data(u));
        let n = x.len() / size;
        let bad =
            (0..n).filter(|i| x[i * size..(i + 1) * size] != y[i * size..(i + 1) * size]).count();
        blocks += n as u64;
        bad_blocks += bad as u64;
        if bad > 0 {
            differing.push(format!("{} ({}): {bad} of {n} blocks differ", t.name, t.ty));
        }
    }
    println!("SmolLM2 round trip: {bad_blocks} of {blocks} blocks differ: {differing:?}");
    // Q4_1 blocks survive dequantizing and quantizing again: every one comes back.
    assert_eq!(bad_blocks, 0, "of {blocks} blocks: {differing:?}");
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
        "llama.rope.freq_base",
    ] {
        assert_eq!(a.header.get(key), b.header.get(key), "{key}");
    }
}

#[test]
fn split_output_reads_back_equal_to_the_unsplit_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = self_merge_config(tmp.path(), &data().join("gguf/tiny-kq"));
    let whole = tmp.path().join("whole.gguf");
    run_ok(amalgam().arg("merge").arg(&config).arg(&whole).args([
        "--quant",
        "Q8_0",
        "--quiet",
        "--tokenizer-pre",
        "llama-bpe",
    ]));
    let split = tmp.path().join("split.gguf");
    run_ok(amalgam().arg("merge").arg(&config).arg(&split).args([
        "--quant",
        "Q8_0",
        "--quiet",
        "--tokenizer-pre",
        "llama-bpe",
        "--split-max-size",
        "2M",
    ]));
    let parts: Vec<PathBuf> =
        (1..=3).map(|i| tmp.path().join(format!("split-{i:05}-of-00003.gguf"))).collect();
    assert!(parts.iter().all(|p| p.exists()) && !split.exists(), "three parts, llama.cpp naming");
    let total: u64 = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let f = GgufFile::open(p).unwrap();
            assert_eq!(f.header.get("split.no"), Some(&Value::U16(i as u16)));
            assert_eq!(f.header.get("split.count"), Some(&Value::U16(3)));
            assert_eq!(f.header.get("split.tensors.count"), Some(&Value::I32(111)));
            assert_eq!(
                f.header.get("general.architecture").is_some(),
                i == 0,
                "metadata only in the first part"
            );
            f.header.tensors.len() as u64
        })
        .sum();
    assert_eq!(total, 111);
    let (a, b) = (
        amalgam_gguf::GgufModel::open(&whole).unwrap(),
        amalgam_gguf::GgufModel::open(&parts[0]).unwrap(),
    );
    assert_eq!(a.names(), b.names());
    assert!(a.config() == b.config(), "config differs");
    for name in a.names() {
        let n: usize = a.shape(name).unwrap().iter().product();
        let (mut x, mut y) = (vec![0f32; n], vec![0f32; n]);
        a.read(name, 0, &mut x).unwrap();
        b.read(name, 0, &mut y).unwrap();
        assert!(x == y, "{name} differs");
        assert_eq!(a.info(name).unwrap().ty, b.info(name).unwrap().ty);
    }
}

#[test]
fn whole_tensor_methods_write_the_same_gguf_in_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let models = data().join("methods/models");
    let config = data().join("methods/configs/model_stock.yml");
    let direct = tmp.path().join("direct.gguf");
    run_ok(amalgam().current_dir(&models).arg("merge").arg(&config).arg(&direct).args([
        "--quant",
        "F32",
        "--quiet",
        "--tokenizer-pre",
        "gpt-2",
    ]));
    let folder = tmp.path().join("merged");
    run_ok(amalgam().current_dir(&models).arg("merge").arg(&config).arg(&folder).arg("--quiet"));
    let two_step = tmp.path().join("two-step.gguf");
    run_ok(amalgam().arg("quantize").arg(&folder).arg(&two_step).args([
        "--quant",
        "F32",
        "--quiet",
        "--tokenizer-pre",
        "gpt-2",
    ]));
    let (a, b) = (gguf_tensors(&direct), gguf_tensors(&two_step));
    assert_eq!(a.len(), b.len());
    let differing: Vec<&String> =
        a.iter().zip(&b).filter(|(x, y)| x != y).map(|(x, _)| &x.0).collect();
    assert!(differing.is_empty(), "one-pass and two-pass differ in {differing:?}");
}

#[test]
fn config_chat_template_reaches_the_gguf_either_way() {
    let tmp = tempfile::tempdir().unwrap();
    let config = self_merge_config(tmp.path(), &data().join("gguf/tiny-kq"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("chat_template: llama3\n");
    std::fs::write(&config, text).unwrap();
    let llama3 = amalgam_merge::chat_template::BUILT_IN[2].1;

    let direct = tmp.path().join("direct.gguf");
    let flags = ["--quant", "Q8_0", "--quiet", "--tokenizer-pre", "llama-bpe"];
    run_ok(amalgam().arg("merge").arg(&config).arg(&direct).args(flags));
    let folder = tmp.path().join("merged");
    run_ok(amalgam().arg("merge").arg(&config).arg(&folder).arg("--quiet"));
    let two_step = tmp.path().join("two-step.gguf");
    run_ok(amalgam().arg("quantize").arg(&folder).arg(&two_step).args(flags));
    for path in [&direct, &two_step] {
        let file = GgufFile::open(path).unwrap();
        let template = file.header.get("tokenizer.chat_template");
        assert_eq!(template, Some(&Value::String(llama3.to_owned())), "{}", path.display());
    }
}
