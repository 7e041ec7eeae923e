//! `amalgam quantize --mlx` against `mlx_lm.convert -q` (tests/data/mlx, made by
//! scripts/make-mlx-goldens): the same files, the weights file, index and config.json
//! byte for byte; bad flags and an occupied output folder refused with the flag named.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{amalgam, data, read_safetensors, run, run_ok, write_safetensors};

/// Quantizes tiny-kq with `flags` into `dir`, and compares the folder with golden `name`.
fn check_in(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let model = data().join("gguf/tiny-kq");
    run_ok(amalgam().arg("quantize").arg(&model).arg(&out).arg("--mlx").args(flags).arg("--quiet"));
    compare(&out, name, &["config.json", "model.safetensors.index.json", "chat_template.jinja"]);
    out
}

/// Compares folder `out` with golden `name`: the file names, the weights' SHA-256, and
/// `same` byte for byte.
fn compare(out: &Path, name: &str, same: &[&str]) {
    let golden = data().join("mlx").join(name);
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(golden.join("tensors.json")).unwrap()).unwrap();
    let want: BTreeSet<String> = manifest.as_object().unwrap().keys().cloned().collect();
    let got: BTreeSet<String> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, want, "{name}: the files");
    let weights = fs::read(out.join("model.safetensors")).unwrap();
    let sha: String = Sha256::digest(&weights).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sha, manifest["model.safetensors"]["sha256"].as_str().unwrap(), "{name}: weights");
    for file in same {
        let (a, b) = (fs::read(out.join(file)).unwrap(), fs::read(golden.join(file)).unwrap());
        assert!(a == b, "{name}: {file} differs");
    }
}

/// [`check_in`] a new temporary folder.
fn check(name: &str, flags: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = check_in(tmp.path(), name, flags);
    if name == "mixed_4_6" {
        // inspect shows each packed weight's bits, group size and unpacked width.
        let shown = run_ok(amalgam().arg("inspect").arg(&out));
        let text = String::from_utf8_lossy(&shown.stdout);
        let line =
            |tensor: &str| text.lines().find(|l| l.contains(tensor)).unwrap_or("").to_owned();
        assert!(
            line("layers.0.self_attn.v_proj.weight ").ends_with("6-bit g64 (256 wide)"),
            "{text}"
        );
        assert!(
            line("layers.1.self_attn.v_proj.weight ").ends_with("4-bit g64 (256 wide)"),
            "{text}"
        );
        assert!(
            text.contains("4 bits, groups of 64, mode \"affine\", 58 per-layer entries"),
            "{text}"
        );
    }
}

#[test]
fn mlx_folders_convert_back_as_mlx_lm_d_does() {
    let tmp = tempfile::tempdir().unwrap();
    let q4 = check_in(tmp.path(), "q4-g64", &[]);
    let out = tmp.path().join("back");
    run_ok(amalgam().arg("convert").arg(&q4).arg(&out).arg("--quiet"));
    let same = ["config.json", "model.safetensors.index.json", "README.md", "chat_template.jinja"];
    compare(&out, "q4-g64-dequantized", &same);
    // A config that does not match the packed weights is refused, naming the layer.
    let config = fs::read_to_string(q4.join("config.json")).unwrap();
    fs::write(q4.join("config.json"), config.replace("\"bits\": 4", "\"bits\": 8")).unwrap();
    let output = run(amalgam().arg("convert").arg(&q4).arg(tmp.path().join("y")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("model.embed_tokens in this MLX folder"), "{stderr}");
    assert!(stderr.contains("do not fit 8-bit groups of 64"), "{stderr}");
    let plain = data().join("gguf/tiny-kq");
    let output = run(amalgam().arg("convert").arg(&plain).arg(tmp.path().join("x")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not an MLX folder: its config.json has no \"quantization\""),
        "{stderr}"
    );
}

#[test]
fn mlx_folders_are_mlx_lms() {
    check("q4-g64", &["--q-bits", "4", "--q-group-size", "64"]);
    check("q3-g32", &["--q-bits", "3", "--q-group-size", "32"]);
    check("q2-g128", &["--q-bits", "2", "--q-group-size", "128"]);
    check("mixed_4_6", &["--quant-predicate", "mixed_4_6"]);
}

#[test]
fn block_modes_are_mlx_lms_and_convert_back_as_there() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["mxfp4", "nvfp4", "mxfp8"] {
        let out = check_in(tmp.path(), mode, &["--q-mode", mode]);
        let back = tmp.path().join(format!("{mode}-back"));
        run_ok(amalgam().arg("convert").arg(&out).arg(&back).arg("--quiet"));
        let same = ["config.json", "model.safetensors.index.json", "README.md"];
        compare(&back, &format!("{mode}-dequantized"), &same);
    }
    // Quantized from float16 values, as mlx_lm casts to --dtype first.
    let flags = ["--q-mode", "mxfp8", "--dtype", "float16", "--q-bits", "8"];
    let out = check_in(tmp.path(), "mxfp8-f16", &flags);
    let shown = run_ok(amalgam().arg("inspect").arg(&out));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("mxfp8 g32 (256 wide)"), "{text}");
}

#[test]
fn bad_mlx_requests_name_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let model = data().join("gguf/tiny-kq");
    let out = tmp.path().join("out");
    let cases: [(&[&str], &str); 7] = [
        (&["--q-group-size", "48"], "not 48 (--q-group-size)"),
        (&["--q-bits", "7"], "not 7 (--q-bits)"),
        (&["--quant-predicate", "mixed_9"], "mixed_2_6, mixed_3_4, mixed_3_6 and mixed_4_6"),
        (&["--dtype", "float64"], "--dtype float64: use float16, bfloat16 or float32"),
        (&["--q-mode", "fp3"], "mlx's are affine, mxfp4, nvfp4 and mxfp8 (--q-mode)"),
        (&["--q-mode", "mxfp4", "--q-group-size", "64"], "mxfp4 takes 4 bits in groups of 32"),
        (&["--q-mode", "nvfp4", "--quant-predicate", "mixed_4_6"], "affine quantization only"),
    ];
    for (flags, message) in cases {
        let output = run(amalgam().arg("quantize").arg(&model).arg(&out).arg("--mlx").args(flags));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(message), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?} left {}", out.display());
    }
    // A model class mlx_lm has none of.
    let gpt2 = architecture(tmp.path(), "qwen2");
    let config = fs::read_to_string(gpt2.join("config.json")).unwrap();
    fs::write(gpt2.join("config.json"), config.replace("\"qwen2\"", "\"gpt2\"")).unwrap();
    let output = run(amalgam().arg("quantize").arg(&gpt2).arg(&out).arg("--mlx"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("phi3, not \"gpt2\""));
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep"), "x").unwrap();
    let output = run(amalgam().arg("quantize").arg(&model).arg(&out).arg("--mlx"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("pass --force to replace it"));
    assert!(out.join("keep").exists());
}

/// The files of two folders that must be the same bytes: all but the card.
fn assert_same_folders(label: &str, ours: &Path, theirs: &Path) {
    let names = |dir: &Path| -> BTreeSet<String> {
        let entries = fs::read_dir(dir).unwrap();
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    let theirs_names = names(theirs);
    assert!(theirs_names.contains("model.safetensors"), "{label}: {theirs_names:?}");
    for name in &theirs_names {
        if name != "README.md" {
            let same = fs::read(ours.join(name)).ok() == fs::read(theirs.join(name)).ok();
            assert!(same, "{label}: {name} differs");
        }
    }
    let ours_names = names(ours);
    let extra: Vec<&str> = ours_names.difference(&theirs_names).map(String::as_str).collect();
    assert_eq!(extra, ["mergekit_config.yml"], "{label}");
}

#[test]
fn merging_straight_to_mlx_gives_the_bytes_of_merging_then_quantizing() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = data().join("gguf/tiny-kq");
    let self_merge = tmp.path().join("self.yml");
    let slices = format!(
        "slices:\n  - sources:\n      - model: {0}\n        layer_range: [0, 5]\n  \
         - sources:\n      - model: {0}\n        layer_range: [3, 8]\n\
         merge_method: passthrough\ndtype: bfloat16\n",
        tiny.display()
    );
    fs::write(&self_merge, slices).unwrap();
    let models = data().join("methods/models");
    // A row-wise method with a bf16 cast, a whole-tensor one, and a recipe.
    let cases: [(&str, PathBuf, &[&str]); 3] = [
        ("self-merge", self_merge, &["--q-bits", "3", "--q-group-size", "32"]),
        ("ties", data().join("methods/configs/ties.yml"), &["--q-bits", "8"]),
        (
            "karcher",
            data().join("methods/configs/karcher.yml"),
            &["--quant-predicate", "mixed_3_6"],
        ),
    ];
    for (label, config, flags) in cases {
        let dir = tmp.path().join(label);
        let merge = |out: &str, mlx: &[&str]| {
            let mut cmd = amalgam();
            cmd.current_dir(&models).arg("merge").arg(&config).arg(dir.join(out)).args(mlx);
            run_ok(cmd.arg("--quiet"));
        };
        merge("folder", &[]);
        run_ok(
            amalgam()
                .arg("quantize")
                .arg(dir.join("folder"))
                .arg(dir.join("quantized"))
                .arg("--mlx")
                .args(flags)
                .arg("--quiet"),
        );
        merge("direct", &[&["--mlx"], flags].concat());
        assert_same_folders(label, &dir.join("direct"), &dir.join("quantized"));
        let card = fs::read_to_string(dir.join("direct/README.md")).unwrap();
        assert!(card.contains("library_name: mlx\n") && card.contains("- mlx\n"), "{card}");
        assert!(card.contains("from mlx_lm import load, generate"), "{card}");
    }
}

#[test]
fn a_gguf_quantizes_to_mlx_as_its_conversion_does() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = data().join("gguf/tiny-kq-Q4_K_M.gguf");
    let (direct, converted, via) =
        (tmp.path().join("direct"), tmp.path().join("hf"), tmp.path().join("via"));
    run_ok(amalgam().arg("quantize").arg(&gguf).arg(&direct).arg("--mlx").arg("--quiet"));
    let mut convert = amalgam();
    convert.arg("convert").arg(&gguf).arg(&converted).args(["--dtype", "float16", "--quiet"]);
    run_ok(&mut convert);
    run_ok(amalgam().arg("quantize").arg(&converted).arg(&via).arg("--mlx").arg("--quiet"));
    let card = fs::read_to_string(direct.join("README.md")).unwrap();
    assert!(card.contains("from `") && card.contains("tiny-kq-Q4_K_M.gguf` by amalgam"), "{card}");
    fs::write(direct.join("mergekit_config.yml"), "").unwrap();
    assert_same_folders("Q4_K_M", &direct, &via);
}

#[test]
fn mlx_merges_refuse_what_they_cannot_do() {
    let tmp = tempfile::tempdir().unwrap();
    let config = data().join("methods/configs/ties.yml");
    let models = data().join("methods/models");
    let cases: [(&str, &[&str], &str); 3] = [
        ("out.gguf", &[], "--mlx writes a folder, not"),
        ("out", &["--resume"], "--resume and --eval-file work on safetensors folder and GGUF"),
        ("out", &["--quant", "Q8_0"], "cannot be used with"),
    ];
    for (out, flags, message) in cases {
        let mut cmd = amalgam();
        cmd.current_dir(&models).arg("merge").arg(&config).arg(tmp.path().join(out));
        let output = run(cmd.arg("--mlx").args(flags));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(message), "{flags:?}: {stderr}");
    }
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0, "something was written");
}

/// `tests/data/architectures`' model `arch` with tiny-kq's tokenizer files, as the goldens
/// were made from it, in `dir`.
fn architecture(dir: &Path, arch: &str) -> PathBuf {
    let src = dir.join(format!("src-{arch}"));
    fs::create_dir_all(&src).unwrap();
    let model = data().join("architectures/models").join(arch);
    let tokenizer = data().join("gguf/tiny-kq");
    for (from, names) in [
        (&model, &["config.json", "generation_config.json", "model.safetensors"][..]),
        (&tokenizer, &["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"][..]),
    ] {
        for name in names {
            fs::copy(from.join(name), src.join(name)).unwrap();
        }
    }
    src
}

#[test]
fn every_model_class_mlx_lm_has_quantizes_and_converts_back_as_there() {
    let tmp = tempfile::tempdir().unwrap();
    let same = ["config.json", "model.safetensors.index.json", "chat_template.jinja"];
    for arch in ["mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"] {
        let src = architecture(tmp.path(), arch);
        for (name, bits, group) in [("q4-g32", "4", "32"), ("q8-g64", "8", "64")] {
            let out = tmp.path().join(format!("{arch}-{name}"));
            let flags = ["--q-bits", bits, "--q-group-size", group, "--quiet"];
            run_ok(amalgam().arg("quantize").arg(&src).arg(&out).arg("--mlx").args(flags));
            compare(&out, &format!("arch/{arch}-{name}"), &same);
        }
        let (q4, back) = (tmp.path().join(format!("{arch}-q4-g32")), tmp.path().join("back"));
        run_ok(amalgam().arg("convert").arg(&q4).arg(&back).arg("--force").arg("--quiet"));
        let dequantized = format!("arch/{arch}-q4-g32-dequantized");
        compare(&back, &dequantized, &["config.json", "model.safetensors.index.json", "README.md"]);
    }
}

#[test]
fn class_rules_are_mlx_lms() {
    let tmp = tempfile::tempdir().unwrap();
    // qwen3 has no default for tying; gemma has no output layer of its own.
    let qwen3 = architecture(tmp.path(), "qwen3");
    let path = qwen3.join("config.json");
    let mut config: serde_json::Map<String, Value> =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config.remove("tie_word_embeddings");
    fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let out = tmp.path().join("out");
    let output = run(amalgam().arg("quantize").arg(&qwen3).arg(&out).arg("--mlx"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no tie_word_embeddings, which mlx_lm's qwen3 class needs"),
        "{stderr}"
    );
    let gemma = architecture(tmp.path(), "gemma");
    let weights = gemma.join("model.safetensors");
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = read_safetensors(&weights)
        .into_iter()
        .map(|(name, (dtype, t))| (name, t.shape.clone(), t.values(dtype)))
        .collect();
    let embed = tensors.iter().find(|t| t.0 == "model.embed_tokens.weight").unwrap().clone();
    tensors.push(("lm_head.weight".into(), embed.1, embed.2));
    write_safetensors(&weights, &tensors);
    let output = run(amalgam().arg("quantize").arg(&gemma).arg(&out).arg("--mlx"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tensor lm_head.weight: mlx_lm's gemma class has no such"), "{stderr}");
    assert!(!out.exists());
}
