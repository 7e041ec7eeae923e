//! The method configs of this release against mergekit 0.1.5's outputs: float16 and
//! bfloat16 results bit for bit, float32 within 1e-6 of each tensor's largest magnitude.

use std::path::Path;

use crate::common::*;

/// Merges `tests/data/methods/configs/<name>.yml` (run from the fixture models' folder, as
/// the configs name models by relative path) and compares with mergekit.
fn check(name: &str) {
    check_within(name, 1e-6);
}

/// As [`check`], with float32 outputs within `tolerance` of each tensor's largest
/// magnitude (methods whose norms and sums mergekit accumulates in another order).
fn check_within(name: &str, tolerance: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(name);
    let models = data().join("methods/models");
    run_ok(
        amalgam()
            .current_dir(&models)
            .arg("merge")
            .arg(data().join(format!("methods/configs/{name}.yml")))
            .arg(&out)
            .arg("--quiet"),
    );
    let golden_dir = data().join(format!("methods/mergekit/{name}"));
    compare_tensors(name, &golden_dir, &out, tolerance);
    compare_config(&golden_dir, &out);
}

fn compare_tensors(name: &str, golden_dir: &Path, out: &Path, tolerance: f64) {
    let golden = read_model(golden_dir);
    let ours = read_model(out);
    let names = |m: &std::collections::BTreeMap<String, _>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&golden), "{name}: tensor names");
    let mut problems = Vec::new();
    let mut worst = 0f64;
    for (tensor, (dtype, want)) in &golden {
        let (our_dtype, got) = &ours[tensor];
        if our_dtype != dtype || got.shape != want.shape {
            problems.push(format!(
                "{tensor}: {our_dtype} {:?} vs mergekit {dtype} {:?}",
                got.shape, want.shape
            ));
            continue;
        }
        let (a, b) = (got.values(*dtype), want.values(*dtype));
        let scale = b.iter().fold(0f64, |m, v| m.max(f64::from(v.abs()))).max(f64::MIN_POSITIVE);
        let diff = a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max(f64::from((x - y).abs())));
        worst = worst.max(diff / scale);
        let exact = got.bytes == want.bytes;
        let ok = match dtype {
            amalgam_tensors::DType::F32 => diff <= tolerance * scale,
            _ => exact,
        };
        if !ok {
            let count = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            problems.push(format!(
                "{tensor}: {count} elements differ, largest {diff:e} (scale {scale:e})"
            ));
        }
    }
    println!("{name}: largest difference {worst:e} of the tensor's largest magnitude");
    assert!(
        problems.is_empty(),
        "{name}: {} tensors differ:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// config.json agrees with mergekit's by meaning (only `transformers_version` may differ).
fn compare_config(golden_dir: &Path, out: &Path) {
    let golden = json(&golden_dir.join("config.json"));
    let ours = json(&out.join("config.json"));
    for (key, value) in golden.as_object().unwrap() {
        if key != "transformers_version" {
            assert_eq!(&ours[key], value, "config.json {key}");
        }
    }
}

#[test]
fn linear_float32() {
    check("linear");
}

#[test]
fn linear_with_gradients_and_filters() {
    check("linear_gradient_filter");
}

#[test]
fn task_arithmetic_rounds_like_mergekit() {
    check("task_arithmetic");
}

#[test]
fn slerp_with_filtered_gradients() {
    check("slerp");
}

#[test]
fn passthrough_frankenmerge_with_scale() {
    check("passthrough_frankenmerge");
}

#[test]
fn nearswap() {
    check_within("nearswap", 1e-5);
}

#[test]
fn ram() {
    check_within("ram", 1e-5);
}

#[test]
fn ramplus_tl() {
    check_within("ramplus_tl", 1e-5);
}

#[test]
fn model_stock() {
    check_within("model_stock", 1e-5);
}

#[test]
fn karcher() {
    check_within("karcher", 1e-5);
}

#[test]
fn multislerp() {
    check_within("multislerp", 1e-5);
}

#[test]
fn nuslerp() {
    check_within("nuslerp", 1e-5);
}
