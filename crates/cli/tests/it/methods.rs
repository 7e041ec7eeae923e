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

/// For magnitude-sparsified methods: every element that differs from mergekit must sit
/// where equal magnitudes straddle a density cut (torch's sort orders such ties
/// arbitrarily); the test finds those positions and prints their count per tensor.
fn check_ties(name: &str) {
    use amalgam_merge::execute::{self, BindOptions};
    use amalgam_merge::methods::{Kernel, whole::Whole};
    let tmp = tempfile::tempdir().unwrap();
    let models_dir = data().join("methods/models");
    let out = tmp.path().join(name);
    let config_path = data().join(format!("methods/configs/{name}.yml"));
    run_ok(
        amalgam().current_dir(&models_dir).arg("merge").arg(&config_path).arg(&out).arg("--quiet"),
    );

    // The same plan in-process, with absolute model paths, to find the tied positions.
    let text = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("model: ", &format!("model: {}/", models_dir.display()));
    let config =
        amalgam_merge::MergeConfig::parse(&text, &mut amalgam_merge::Diagnostics::new(false))
            .unwrap();
    let models: Vec<amalgam_merge::source::Model> = config
        .referenced_models()
        .iter()
        .map(|m| amalgam_merge::source::Model::open(Path::new(&m.model.path)).unwrap())
        .collect();
    struct Catalog<'a>(&'a [amalgam_merge::source::Model]);
    impl amalgam_merge::plan::Catalog for Catalog<'_> {
        fn config(&self, m: usize) -> &serde_json::Map<String, serde_json::Value> {
            self.0[m].config()
        }
        fn contains(&self, m: usize, t: &str) -> bool {
            self.0[m].contains(t)
        }
    }
    let plan = amalgam_merge::plan::plan(&config, &Catalog(&models), false).unwrap();
    let bound = execute::bind(
        &plan,
        &models,
        BindOptions { dtype: config.dtype, out_dtype: config.out_dtype, seed: 0 },
    )
    .unwrap();

    let golden = read_model(&data().join(format!("methods/mergekit/{name}")));
    let ours = read_model(&out);
    let mut problems = Vec::new();
    let (mut tied_total, mut worst_untied) = (0usize, 0f64);
    for b in &bound {
        let Kernel::Whole(Whole::Gta(gta)) = &b.kernel else {
            panic!("{name} is not a GTA method")
        };
        let tied = gta.tied_positions(&execute::whole_inputs(b).unwrap());
        let (dtype, want) = &golden[&b.spec.name];
        let (a, w) = (ours[&b.spec.name].1.values(*dtype), want.values(*dtype));
        let scale = w.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        let mut tied_here = 0;
        for (e, (x, y)) in a.iter().zip(&w).enumerate() {
            let diff = f64::from((x - y).abs());
            let allowed = if *dtype == amalgam_tensors::DType::F32 { 1e-5 * scale } else { 0.0 };
            if diff > allowed {
                if tied[e] {
                    tied_here += 1;
                } else {
                    worst_untied = worst_untied.max(diff / scale);
                    problems.push(format!(
                        "{} element {e}: {x} vs mergekit {y}, not a tied position",
                        b.spec.name
                    ));
                }
            }
        }
        if tied_here > 0 {
            println!(
                "{name}: {}: {tied_here} elements differ, all at tied magnitudes",
                b.spec.name
            );
        }
        tied_total += tied_here;
    }
    println!(
        "{name}: {tied_total} elements differ at tied positions in all; largest other difference {worst_untied:e}"
    );
    assert!(
        problems.is_empty(),
        "{} elements differ away from ties:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
}

#[test]
fn ties() {
    check_ties("ties");
}

#[test]
fn breadcrumbs() {
    check_ties("breadcrumbs");
}

#[test]
fn breadcrumbs_ties() {
    check_ties("breadcrumbs_ties");
}
