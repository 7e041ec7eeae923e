//! `amalgam quantize --mlx` against `mlx_lm.convert -q` (tests/data/mlx, made by
//! scripts/make-mlx-goldens): the same files, the weights file, index and config.json
//! byte for byte; bad flags and an occupied output folder refused with the flag named.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{amalgam, data, run, run_ok};

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
fn bad_mlx_requests_name_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let model = data().join("gguf/tiny-kq");
    let out = tmp.path().join("out");
    let cases: [(&[&str], &str); 4] = [
        (&["--q-group-size", "48"], "not 48 (--q-group-size)"),
        (&["--q-bits", "7"], "not 7 (--q-bits)"),
        (&["--quant-predicate", "mixed_9"], "mixed_2_6, mixed_3_4, mixed_3_6 and mixed_4_6"),
        (&["--dtype", "float64"], "--dtype float64: use float16, bfloat16 or float32"),
    ];
    for (flags, message) in cases {
        let output = run(amalgam().arg("quantize").arg(&model).arg(&out).arg("--mlx").args(flags));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(message), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?} left {}", out.display());
    }
    let qwen2 = data().join("architectures/models/qwen2");
    let output = run(amalgam().arg("quantize").arg(&qwen2).arg(&out).arg("--mlx"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not \"qwen2\""));
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep"), "x").unwrap();
    let output = run(amalgam().arg("quantize").arg(&model).arg(&out).arg("--mlx"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("pass --force to replace it"));
    assert!(out.join("keep").exists());
}
