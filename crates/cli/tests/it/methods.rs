//! The method configs of this release against mergekit 0.1.5's outputs: float16 and
//! bfloat16 results bit for bit, float32 within 1e-5 of each tensor's largest magnitude.
//!
//! Three sets of goldens: `methods/` (the shared fixtures, mostly computed in float32),
//! and `methods-bf16/` and `methods-fp16/` (the same configs computed in bfloat16 and
//! float16 by mergekit 0.1.5, made by `scripts/make-goldens`), where every rounding of
//! torch's must be matched.

use std::path::Path;

use amalgam_tensors::DType;

use crate::common::*;

/// The shared fixtures' configs and outputs.
pub(crate) const FIXTURES: &str = "methods";
/// The same configs computed in bfloat16, and in float16.
pub(crate) const BF16: &str = "methods-bf16";
pub(crate) const FP16: &str = "methods-fp16";

/// Methods where mergekit writes float32 whatever `dtype` says and amalgam writes the
/// dtype (mergekit #604 and its ramplus_tl twin): their goldens are compared rounded
/// to it.
const HONOURS_DTYPE: [&str; 2] = ["arcee_fusion", "ramplus_tl"];

/// Merges `tests/data/<set>/configs/<name>.yml` (run from the fixture models' folder, as
/// the configs name models by relative path) and compares with mergekit.
pub(crate) fn check(set: &str, name: &str) {
    check_within(set, name, 1e-6);
}

/// As [`check`], with float32 outputs within `tolerance` of each tensor's largest
/// magnitude (methods whose norms and sums mergekit accumulates in another order).
fn check_within(set: &str, name: &str, tolerance: f64) {
    let (_tmp, out) =
        merge_in(&data().join("methods/models"), &data().join(format!("{set}/configs/{name}.yml")));
    let golden_dir = data().join(format!("{set}/mergekit/{name}"));
    compare_tensors(name, &golden(set, name), &read_model(&out), tolerance);
    compare_config(&golden_dir, &out);
}

/// mergekit's output for `name` in `set`, float32 results rounded to the config's dtype
/// for the methods where amalgam honours it.
pub(crate) fn golden(set: &str, name: &str) -> ModelTensors {
    let mut model = read_model(&data().join(format!("{set}/mergekit/{name}")));
    let dtype = match set {
        BF16 => DType::BF16,
        FP16 => DType::F16,
        _ => return model,
    };
    if HONOURS_DTYPE.contains(&name) {
        for (stored, tensor) in model.values_mut() {
            assert_eq!(*stored, DType::F32, "mergekit writes {name} in float32");
            let values = tensor.values(DType::F32);
            *tensor = Tensor::from_values(dtype, tensor.shape.clone(), &values);
            *stored = dtype;
        }
    }
    model
}

fn compare_tensors(name: &str, golden: &ModelTensors, ours: &ModelTensors, tolerance: f64) {
    let names = |m: &ModelTensors| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(ours), names(golden), "{name}: tensor names");
    let mut problems = Vec::new();
    let mut worst = 0f64;
    for (tensor, (dtype, want)) in golden {
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
            DType::F32 => diff <= tolerance * scale,
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
    let mut ours = json(&out.join("config.json"));
    // Both ways: every key of mergekit's with its value, and no key of ours beyond them
    // but transformers' version (whichever transformers wrote the golden).
    let map = ours.as_object_mut().unwrap();
    match golden.get("transformers_version") {
        Some(v) => map.insert("transformers_version".into(), v.clone()),
        None => map.remove("transformers_version"),
    };
    assert_eq!(ours, golden, "config.json differs from mergekit's");
}

#[test]
fn linear_float32() {
    check(FIXTURES, "linear");
}

#[test]
fn linear_with_gradients_and_filters() {
    check(FIXTURES, "linear_gradient_filter");
}

#[test]
fn task_arithmetic_rounds_like_mergekit() {
    check(FIXTURES, "task_arithmetic");
}

#[test]
fn slerp_with_filtered_gradients() {
    check(FIXTURES, "slerp");
}

#[test]
fn passthrough_frankenmerge_with_scale() {
    check(FIXTURES, "passthrough_frankenmerge");
}

#[test]
fn nearswap() {
    check_within(FIXTURES, "nearswap", 1e-5);
}

#[test]
fn ram() {
    check_within(FIXTURES, "ram", 1e-5);
}

#[test]
fn ramplus_tl() {
    check_within(FIXTURES, "ramplus_tl", 1e-5);
}

#[test]
fn model_stock() {
    check_within(FIXTURES, "model_stock", 1e-5);
}

#[test]
fn karcher() {
    check_within(FIXTURES, "karcher", 1e-5);
}

#[test]
fn multislerp() {
    check_within(FIXTURES, "multislerp", 1e-5);
}

#[test]
fn nuslerp() {
    check_within(FIXTURES, "nuslerp", 1e-5);
}

/// A merge of `yaml` over the fixture models (run in their folder) into `out`.
fn merge_in_models(yaml: &str, out: &Path, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, yaml).unwrap();
    run_ok(
        amalgam()
            .current_dir(data().join("methods/models"))
            .arg("merge")
            .arg(&config)
            .arg(out)
            .arg("--quiet")
            .args(extra),
    );
}

#[test]
fn random_methods_are_reproducible_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    for method in ["dare_ties", "dare_linear", "della", "della_linear"] {
        let yaml =
            std::fs::read_to_string(data().join(format!("methods/configs/{method}.yml"))).unwrap();
        let (one, two, other) = (
            tmp.path().join(format!("{method}-1")),
            tmp.path().join(format!("{method}-2")),
            tmp.path().join(format!("{method}-seed")),
        );
        merge_in_models(&yaml, &one, &["--threads", "1", "--random-seed", "42"]);
        merge_in_models(&yaml, &two, &["--threads", "2", "--random-seed", "42"]);
        merge_in_models(&yaml, &other, &["--random-seed", "43"]);
        let (a, b, c) = (read_model(&one), read_model(&two), read_model(&other));
        for (name, (_, t)) in &a {
            assert_eq!(t.bytes, b[name].1.bytes, "{method} {name}: threads changed the result");
        }
        assert!(
            a.iter().any(|(n, (_, t))| t.bytes != c[n].1.bytes),
            "{method}: another seed gives another result"
        );
    }
}

/// Task vectors of ft_a's (dense) and ft_b's layer-0 MLP weight against base, in f32.
fn task_vectors(tensor: &str) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let load = |m: &str| {
        let model = read_model(&data().join("methods/models").join(m));
        let (dtype, t) = &model[tensor];
        t.values(*dtype)
    };
    (load("base"), load("ft_a"), load("ft_b"))
}

pub(crate) fn gta(
    sparsifier: amalgam_merge::methods::gta::Sparsifier,
    tasks: Vec<(usize, f32, f32)>,
    rescale: bool,
    seed: u64,
) -> amalgam_merge::methods::gta::Gta {
    use amalgam_merge::methods::gta::{Gta, TaskInput};
    Gta {
        base: 0,
        tasks: tasks
            .into_iter()
            .map(|(index, weight, density)| TaskInput {
                index,
                weight,
                density,
                gamma: 0.0,
                epsilon: 0.1,
            })
            .collect(),
        sparsifier: Some(sparsifier),
        consensus: false,
        normalize: false,
        rescale,
        lambda: 1.0,
        seed,
    }
}

#[test]
fn dare_and_della_keep_the_density_and_rescale_preserves_l1() {
    use amalgam_merge::methods::gta::Sparsifier;
    let (base, ft_a, _) = task_vectors("model.layers.0.mlp.up_proj.weight");
    assert!(base.len() >= 4096);
    let delta: Vec<f32> = ft_a.iter().zip(&base).map(|(x, b)| x - b).collect();
    let nonzero = delta.iter().filter(|d| **d != 0.0).count();
    assert!(nonzero as f64 > 0.9 * delta.len() as f64, "ft_a's task vector is dense");
    let inputs = vec![base.clone(), ft_a.clone()];
    for sparsifier in [Sparsifier::Random, Sparsifier::DellaMagprune] {
        for density in [0.3f32, 0.5, 0.9] {
            let out =
                gta(sparsifier, vec![(1, 1.0, density)], false, 11).merge(&inputs, 128, DType::F32);
            let kept =
                out.iter().zip(&base).filter(|(o, b)| o != b).count() as f64 / nonzero as f64;
            assert!(
                (kept - f64::from(density)).abs() < 0.01,
                "{sparsifier:?} density {density}: kept {kept}"
            );
            let rescaled =
                gta(sparsifier, vec![(1, 1.0, density)], true, 11).merge(&inputs, 128, DType::F32);
            let l1 =
                |v: &[f32]| v.iter().zip(&base).map(|(x, b)| f64::from((x - b).abs())).sum::<f64>();
            let (before, after) = (l1(&ft_a), l1(&rescaled));
            assert!(
                (after - before).abs() / before < 1e-4,
                "{sparsifier:?}: L1 {after} vs {before}"
            );
        }
    }
}

#[test]
fn dare_linear_is_task_arithmetic_on_average() {
    use amalgam_merge::methods::gta::Sparsifier;
    let (base, ft_a, ft_b) = task_vectors("model.layers.0.mlp.up_proj.weight");
    let inputs = vec![base.clone(), ft_a.clone(), ft_b.clone()];
    let n = base.len();
    let mut mean = vec![0f64; n];
    for seed in 0..256 {
        let out = gta(Sparsifier::Random, vec![(1, 0.6, 0.5), (2, 0.4, 0.5)], true, seed).merge(
            &inputs,
            128,
            DType::F32,
        );
        for (m, (o, b)) in mean.iter_mut().zip(out.iter().zip(&base)) {
            *m += f64::from(o - b) / 256.0;
        }
    }
    let expected: Vec<f64> = (0..n)
        .map(|e| 0.6 * f64::from(ft_a[e] - base[e]) + 0.4 * f64::from(ft_b[e] - base[e]))
        .collect();
    let diff = mean.iter().zip(&expected).map(|(m, x)| (m - x).powi(2)).sum::<f64>().sqrt();
    let norm = expected.iter().map(|x| x * x).sum::<f64>().sqrt();
    println!(
        "dare_linear over 256 seeds: relative L2 distance to task arithmetic {:.4}",
        diff / norm
    );
    assert!(diff / norm < 0.10, "relative L2 {}", diff / norm);
}

#[test]
fn della_with_an_impossible_epsilon_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = "models:\n  - {model: ft_a, parameters: {density: 0.5, epsilon: 0.6, weight: 1}}\nmerge_method: della\nbase_model: base\n";
    let config = tmp.path().join("c.yml");
    std::fs::write(&config, yaml).unwrap();
    let output = run(amalgam()
        .current_dir(data().join("methods/models"))
        .arg("merge")
        .arg(&config)
        .arg(tmp.path().join("o")));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("epsilon 0.6"));
}

/// The configs computed in bfloat16 and float16: every deterministic method rounds where
/// mergekit rounds, so its bytes are mergekit's.
#[test]
fn half_precision_methods_round_like_mergekit() {
    for set in [BF16, FP16] {
        for name in [
            "linear",
            "model_stock",
            "karcher",
            "multislerp",
            "nuslerp",
            "nearswap",
            "ram",
            "ramplus_tl",
            "nuslerp_rows",
            "nuslerp_columns",
            "model_stock_filter_wise",
            "multislerp_unnormalized",
        ] {
            check(set, name);
        }
    }
}
