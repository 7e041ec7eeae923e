//! Bad input of every kind: a one-paragraph error naming the file, tensor or key and the
//! fix, exit status 2, no panic, and nothing at OUT_DIR.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A scratch folder holding copies of the fixture models, where configs can name them.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let scratch = Scratch { dir: tempfile::tempdir().unwrap() };
        for model in ["base", "ft_a"] {
            copy_model(&data().join("methods/models").join(model), &scratch.path(model));
        }
        scratch
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `amalgam merge` on `yaml` in the scratch folder; it must fail with status 2,
    /// mention every `expected` fragment, and leave no output folder.
    fn fails(&self, yaml: &str, expected: &[&str]) -> String {
        self.fails_with(yaml, &[], expected)
    }

    fn fails_with(&self, yaml: &str, extra: &[&str], expected: &[&str]) -> String {
        fs::write(self.path("config.yml"), yaml).unwrap();
        let out = self.path("out");
        let output = run(amalgam()
            .current_dir(self.dir.path())
            .args(["merge", "config.yml", "out", "--quiet"])
            .args(extra));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "exit status for {yaml}:\n{stderr}");
        for e in expected {
            assert!(stderr.contains(e), "expected {e:?} in:\n{stderr}");
        }
        assert_eq!(
            stderr.trim_end().lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{stderr}"
        );
        assert!(!out.exists(), "OUT_DIR must not exist after an error");
        let leftovers: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "staging folders left: {leftovers:?}");
        stderr
    }
}

fn passthrough(model: &str, range: &str) -> String {
    format!(
        "merge_method: passthrough\nslices:\n- sources:\n  - model: {model}\n    layer_range: {range}\n"
    )
}

#[test]
fn layer_range_past_the_models_layers() {
    Scratch::new().fails(
        &passthrough("base", "[2, 9]"),
        &["slices[0].sources[0].layer_range", "6 layers of base", "largest valid end is 6"],
    );
}

#[test]
fn sources_of_unequal_length() {
    let yaml = "merge_method: linear\nslices:\n- sources:\n  - {model: base, layer_range: [0, 2], parameters: {weight: 1}}\n  - {model: ft_a, layer_range: [0, 3], parameters: {weight: 1}}\n";
    Scratch::new().fails(yaml, &["slices[0]", "same number of layers", "[2, 3]"]);
}

#[test]
fn unknown_method_and_dtype() {
    let s = Scratch::new();
    s.fails(
        "merge_method: linaer\nmodels: [{model: base}]\n",
        &["merge_method", "linaer", "did you mean `linear`"],
    );
    s.fails(
        &(passthrough("base", "[0, 1]") + "dtype: float8\n"),
        &["dtype", "Unimplemented dtype \"float8\""],
    );
}

#[test]
fn too_few_models_besides_the_base() {
    let s = Scratch::new();
    s.fails(
        "merge_method: multislerp\nbase_model: base\nmodels: [{model: base, parameters: {weight: 1}}]\n",
        &["multislerp needs at least 1 non-base model(s)", "got 0"],
    );
    s.fails(
        "merge_method: nuslerp\nbase_model: base\nmodels:\n  - {model: base, parameters: {weight: 1}}\n  - {model: ft_a, parameters: {weight: 1}}\n",
        &["nuslerp needs exactly 2 non-base model(s)", "got 1"],
    );
}

#[test]
fn missing_required_parameter() {
    let yaml = "merge_method: linear\nmodels:\n  - model: base\n    parameters: {weight: 0.5}\n  - model: ft_a\n";
    Scratch::new().fails(yaml, &["Missing required parameter weight for ft_a.", "set `weight`"]);
}

#[test]
fn missing_tensor() {
    let s = Scratch::new();
    let index_path = s.path("ft_a/model.safetensors.index.json");
    let mut index = json(&index_path);
    index["weight_map"].as_object_mut().unwrap().remove("model.layers.3.mlp.up_proj.weight");
    fs::write(&index_path, index.to_string()).unwrap();
    let yaml = "merge_method: linear\nmodels:\n  - {model: base, parameters: {weight: 1}}\n  - {model: ft_a, parameters: {weight: 1}}\n";
    s.fails(
        yaml,
        &["Tensor model.layers.3.mlp.up_proj.weight required but not present in model ft_a"],
    );
}

#[test]
fn shapes_that_differ() {
    let s = Scratch::new();
    let seed = seed_hub().join("models--meta-llama--Meta-Llama-3-70B-Instruct/snapshots/7129260dd854a80eb10ace5f61c20324b472b31c");
    copy_model(&seed, &s.path("wide"));
    let yaml = "merge_method: linear\nslices:\n- sources:\n  - {model: base, layer_range: [0, 2], parameters: {weight: 1}}\n  - {model: wide, layer_range: [0, 2], parameters: {weight: 1}}\n";
    s.fails(
        yaml,
        &[
            "Tensor size mismatch for model.layers.0.self_attn.k_proj.weight",
            "base [32, 64]",
            "wide [8, 64]",
        ],
    );
}

#[test]
fn vocabularies_that_differ() {
    let s = Scratch::new();
    resize_vocab(&s.path("ft_a"), 500);
    let yaml = "merge_method: linear\nmodels:\n  - {model: base, parameters: {weight: 1}}\n  - {model: ft_a, parameters: {weight: 1}}\n";
    s.fails(
        yaml,
        &[
            "Tensor size mismatch for model.embed_tokens.weight",
            "base [512, 64], ft_a [500, 64]",
            "different vocabulary sizes",
            "tokenizer_source: union",
            "--unsafe-truncate-embeddings",
        ],
    );

    // The way out: cut to the smaller vocabulary, with a warning per weight.
    fs::write(s.path("config.yml"), yaml).unwrap();
    let output = run_ok(amalgam().current_dir(s.dir.path()).args([
        "merge",
        "config.yml",
        "out",
        "--quiet",
        "--unsafe-truncate-embeddings",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lm_head.weight cut to its first 500 rows"), "{stderr}");
    let out = read_model(&s.path("out"));
    let (base, ft) = (read_model(&s.path("base")), read_model(&s.path("ft_a")));
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        let (dtype, merged) = &out[name];
        assert_eq!(merged.shape, [500, 64]);
        let (b, f) = (base[name].1.values(*dtype), ft[name].1.values(*dtype));
        let want: Vec<f32> = b[..500 * 64].iter().zip(&f).map(|(x, y)| (x + y) / 2.0).collect();
        let got = merged.values(*dtype);
        let worst =
            got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs() / w.abs().max(1.0)));
        assert!(worst <= 1e-2, "{name}: {worst}");
    }
    assert_eq!(json(&s.path("out/config.json"))["vocab_size"], 500);
}

#[test]
fn shard_index_naming_a_file_outside_the_folder() {
    let s = Scratch::new();
    let index_path = s.path("base/model.safetensors.index.json");
    let text = fs::read_to_string(&index_path).unwrap().replacen(
        "model-00001-of-00003.safetensors",
        "../ft_a/model-00001-of-00003.safetensors",
        1,
    );
    fs::write(&index_path, text).unwrap();
    s.fails(
        &passthrough("base", "[0, 1]"),
        &[
            "model.safetensors.index.json",
            "../ft_a/model-00001-of-00003.safetensors",
            "outside the model folder",
        ],
    );
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let s = Scratch::new();
    let shard = s.path("base/model-00002-of-00003.safetensors");
    let bytes = fs::read(&shard).unwrap();
    fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    s.fails(
        &passthrough("base", "[0, 1]"),
        &["model-00002-of-00003.safetensors", "truncated", "fetch it again"],
    );
    let mut garbage = bytes.clone();
    garbage[8..16].copy_from_slice(b"\x00\xff\x00\xff\x00\xff\x00\xff");
    fs::write(&shard, &garbage).unwrap();
    s.fails(
        &passthrough("base", "[0, 1]"),
        &["model-00002-of-00003.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn pickle_only_model_is_refused() {
    let s = Scratch::new();
    let dir = s.path("pickled");
    fs::create_dir(&dir).unwrap();
    fs::copy(s.path("base/config.json"), dir.join("config.json")).unwrap();
    fs::write(dir.join("pytorch_model.bin"), b"not really a pickle").unwrap();
    s.fails(
        &passthrough("pickled", "[0, 1]"),
        &["pytorch_model.bin", "never loads pickles", "safetensors"],
    );
}

#[test]
fn model_not_found_offline_names_where_it_looked() {
    let s = Scratch::new();
    let cache = s.path("empty-cache");
    fs::create_dir(&cache).unwrap();
    s.fails_with(
        &passthrough("nobody/nothing", "[0, 1]"),
        &["--transformers-cache", cache.to_str().unwrap()],
        &[
            "nobody/nothing",
            "./nobody/nothing",
            "models--nobody--nothing",
            "HF_HUB_OFFLINE",
            "huggingface-cli download",
        ],
    );
}

#[test]
fn non_empty_output_needs_force() {
    let s = Scratch::new();
    fs::write(s.path("config.yml"), passthrough("base", "[0, 1]")).unwrap();
    let out = s.path("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep.txt"), "precious").unwrap();
    let output =
        run(amalgam().current_dir(s.dir.path()).args(["merge", "config.yml", "out", "--quiet"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--force"));
    assert!(out.join("keep.txt").exists(), "untouched without --force");
    run_ok(amalgam().current_dir(s.dir.path()).args([
        "merge",
        "config.yml",
        "out",
        "--quiet",
        "--force",
    ]));
    assert!(!out.join("keep.txt").exists());
    assert!(out.join("model.safetensors").exists());
    assert_eq!(json(&out.join("config.json"))["num_hidden_layers"], 1);
}

#[test]
fn unknown_keys_warn_and_strict_refuses() {
    let s = Scratch::new();
    let yaml = passthrough("base", "[0, 1]") + "dtpye: float16\n";
    fs::write(s.path("config.yml"), &yaml).unwrap();
    let output =
        run_ok(amalgam().current_dir(s.dir.path()).args(["merge", "config.yml", "out", "--quiet"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown key `dtpye`") && stderr.contains("did you mean `dtype`"),
        "{stderr}"
    );
    fs::remove_dir_all(s.path("out")).unwrap();
    s.fails_with(&yaml, &["--strict"], &["dtpye", "--strict"]);
}

#[test]
fn mergekit_command_lines_run_unchanged() {
    let s = Scratch::new();
    fs::write(s.path("config.yml"), passthrough("base", "[0, 2]")).unwrap();
    let output = run_ok(amalgam().current_dir(s.dir.path()).args([
        "merge",
        "config.yml",
        "out",
        "--copy-tokenizer",
        "--allow-crimes",
        "--out-shard-size",
        "1B",
        "--lazy-unpickle",
        "--cuda",
        "--low-cpu-memory",
        "--trust-remote-code",
        "-j",
        "1",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("note: --lazy-unpickle"), "{stderr}");
    assert!(Path::new(&s.path("out/tokenizer.json")).exists());
}

#[test]
fn other_mergekit_tools_are_named() {
    let s = Scratch::new();
    s.fails(
        "base_model: base\ngate_mode: hidden\nexperts:\n  - source_model: ft_a\n",
        &["mergekit-moe config (it has `experts:`)", "no mergekit-moe equivalent yet"],
    );
    for (command, tool) in
        [("extract-lora", "mergekit-extract-lora"), ("mergekit-moe", "mergekit-moe")]
    {
        let output = run(amalgam().arg(command).arg("--help"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("{tool} has no amalgam equivalent yet")), "{stderr}");
    }
}

/// tiny-kq (4 heads, 2 KV heads of 64 rows each) with config.json's `key` set to `value`.
fn tiny_with(dir: &Path, key: &str, value: serde_json::Value) -> PathBuf {
    let model = dir.join(format!("tiny-{key}-{value}"));
    copy_model(&data().join("gguf/tiny-kq"), &model);
    let mut config = json(&model.join("config.json"));
    config[key] = value;
    fs::write(model.join("config.json"), config.to_string()).unwrap();
    model
}

#[test]
fn head_counts_that_do_not_split_the_rows_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, value, heads) in [
        ("num_attention_heads", 0, "into 0 attention heads"),
        ("num_attention_heads", 3, "256 rows do not split into 3 attention heads"),
        ("num_key_value_heads", 0, "into 0 attention heads"),
        ("num_key_value_heads", 128, "128 rows do not split into 128 attention heads of an even"),
    ] {
        let model = tiny_with(tmp.path(), key, value.into());
        let out = tmp.path().join(format!("{key}-{value}.gguf"));
        let err = error_of(
            amalgam().arg("quantize").arg(&model).arg(&out).args(["--quant", "f16", "--quiet"]),
        );
        assert!(err.contains(heads) && err.contains("num_attention_heads"), "{key} {value}: {err}");
        assert!(!out.exists(), "{key} {value}: an output was left");
    }
    // A merge into GGUF whose config claims 3 KV heads on a 2-KV-head model.
    let model = tiny_with(tmp.path(), "num_key_value_heads", 3.into());
    let config = tmp.path().join("kv3.yml");
    fs::write(&config, passthrough(&model.display().to_string(), "[0, 8]")).unwrap();
    let err = error_of(amalgam().arg("merge").arg(&config).arg(tmp.path().join("kv3.gguf")));
    assert!(err.contains("k_proj") && err.contains("into 3 attention heads"), "{err}");
}

#[test]
fn a_zero_dimensional_llama_tensor_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("scalar-norm");
    copy_model(&data().join("gguf/tiny-kq"), &model);
    let file = model.join("model.safetensors");
    let name = "model.norm.weight";
    let mut list: Vec<(String, Vec<usize>, Vec<f32>)> = read_safetensors(&file)
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .map(|(n, (dtype, t))| (n.clone(), t.shape.clone(), t.values(*dtype)))
        .collect();
    list.push((name.into(), vec![], vec![1.0]));
    write_safetensors(&file, &list);
    let err = error_of(
        amalgam()
            .arg("quantize")
            .arg(&model)
            .arg(tmp.path().join("o.gguf"))
            .args(["--quant", "f16"]),
    );
    assert!(err.contains(name) && err.contains("0-D tensor"), "{err}");
}

#[test]
fn a_layer_count_no_model_has_is_an_error_not_an_abort() {
    // Found by fuzzing config.json: 2^31 layers sized per-layer settings before any weight
    // was looked up, and the allocation aborted the process.
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_with(tmp.path(), "num_hidden_layers", (1u64 << 31).into());
    let err = error_of(amalgam().arg("generate").arg(&model).args(["-p", "hi", "-n", "1"]));
    assert!(err.contains("num_hidden_layers is 2147483648; no model has more"), "{err}");
}
