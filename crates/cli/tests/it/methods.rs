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
const FIXTURES: &str = "methods";
/// The same configs computed in bfloat16, and in float16.
const BF16: &str = "methods-bf16";
const FP16: &str = "methods-fp16";

/// Methods where mergekit writes float32 whatever `dtype` says and amalgam writes the
/// dtype (mergekit #604 and its ramplus_tl twin): their goldens are compared rounded
/// to it.
const HONOURS_DTYPE: [&str; 2] = ["arcee_fusion", "ramplus_tl"];

/// Merges `tests/data/<set>/configs/<name>.yml` (run from the fixture models' folder, as
/// the configs name models by relative path) and compares with mergekit.
fn check(set: &str, name: &str) {
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
fn golden(set: &str, name: &str) -> ModelTensors {
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

/// For magnitude-sparsified methods: every element that differs from mergekit must sit
/// where equal magnitudes straddle a density cut (torch's sort orders such ties
/// arbitrarily); the test finds those positions and prints their count per tensor.
/// Merges `name`'s config with the CLI and binds the same plan in-process (with
/// absolute model paths) to recompute whole-tensor inputs; returns the bound tensors,
/// mergekit's output and ours to `check`.
fn merge_and_bind(
    set: &str,
    name: &str,
    check: impl FnOnce(&[amalgam_merge::execute::Bound], &ModelTensors, &ModelTensors),
) {
    use amalgam_merge::execute::{self, BindOptions};
    let tmp = tempfile::tempdir().unwrap();
    let models_dir = data().join("methods/models");
    let out = tmp.path().join(name);
    let config_path = data().join(format!("{set}/configs/{name}.yml"));
    run_ok(
        amalgam().current_dir(&models_dir).arg("merge").arg(&config_path).arg(&out).arg("--quiet"),
    );

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
        BindOptions {
            dtype: config.dtype,
            out_dtype: config.out_dtype,
            seed: 0,
            truncate_vocab: false,
            vocab: None,
        },
    )
    .unwrap();
    let ours = read_model(&out);
    check(&bound, &golden(set, name), &ours);
}

/// Elements whose fate a magnitude cut (TIES' top-k, breadcrumbs' two cuts) leaves to the
/// sort's tie-break, counted in the test from the inputs: a cut at sorted position `c`
/// splits the group of equal magnitudes `v` when fewer than `c` magnitudes lie below `v`
/// and more than `c` lie at or below it. Zeros are never tied (a zero changes nothing).
fn magnitude_ties(
    gta: &amalgam_merge::methods::gta::Gta,
    inputs: &[Vec<f32>],
    working: DType,
) -> Vec<bool> {
    use amalgam_merge::methods::gta::Sparsifier;
    let b = &inputs[gta.base];
    let mut tied = vec![false; b.len()];
    for task in gta.tasks.iter().filter(|t| t.density < 1.0) {
        let mags: Vec<f32> = inputs[task.index]
            .iter()
            .zip(b)
            .map(|(x, y)| {
                let mut d = [x - y];
                amalgam_tensors::dtype::round_slice(working, &mut d);
                d[0].abs()
            })
            .collect();
        let n = mags.len();
        let (density, gamma) = (f64::from(task.density), f64::from(task.gamma));
        let cuts = match gta.sparsifier {
            Some(Sparsifier::Magnitude) => vec![n - ((density * n as f64) as usize).clamp(1, n)],
            Some(Sparsifier::MagnitudeOutliers) => {
                let (keep, top) = ((density * n as f64) as usize, (gamma * n as f64) as usize);
                let bottom = n.saturating_sub(keep + top);
                vec![bottom, (bottom + keep).min(n)]
            }
            _ => Vec::new(),
        };
        let mut sorted = mags.clone();
        sorted.sort_by(f32::total_cmp);
        for c in cuts.into_iter().filter(|&c| c > 0 && c < n) {
            let v = sorted[c];
            let below = mags.iter().filter(|m| **m < v).count();
            let at_or_below = below + mags.iter().filter(|m| **m == v).count();
            if v != 0.0 && below < c && c < at_or_below {
                mags.iter().zip(&mut tied).filter(|(m, _)| **m == v).for_each(|(_, t)| *t = true);
            }
        }
    }
    tied
}

/// Checks a method with a sort or threshold cut: away from the positions where the
/// cut's outcome depends on float order or tie-breaks (see `Whole::tied_positions`),
/// the output equals mergekit (within 1e-5 of the tensor's largest magnitude for
/// float32); prints how many elements differ at such positions.
fn check_ties(set: &str, name: &str) {
    use amalgam_merge::execute;
    use amalgam_merge::methods::{Kernel, whole::Whole};
    merge_and_bind(set, name, |bound, golden, ours| {
        let mut problems = Vec::new();
        let (mut tied_total, mut worst_untied) = (0usize, 0f64);
        let (mut marked, mut elements) = (0usize, 0usize);
        for b in bound {
            let Kernel::Whole(whole) = &b.kernel else {
                panic!("{name} is not a whole-tensor method")
            };
            let cols = b.spec.shape.last().copied().unwrap_or(1);
            let inputs = execute::whole_inputs(b).unwrap();
            // The magnitude cuts' ties are found here, from the inputs; arcee_fusion's
            // float-order band comes from the code (its KL bookkeeping is not redone here).
            let tied = match whole {
                Whole::Gta(gta) => magnitude_ties(gta, &inputs, b.working),
                _ => whole.tied_positions(&inputs, cols, b.working).expect("a cut"),
            };
            let (dtype, want) = &golden[&b.spec.name];
            let (a, w) = (ours[&b.spec.name].1.values(*dtype), want.values(*dtype));
            let scale = w.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            let mut tied_here = 0;
            marked += tied.iter().filter(|t| **t).count();
            elements += tied.len();
            for (e, (x, y)) in a.iter().zip(&w).enumerate() {
                let diff = f64::from((x - y).abs());
                let allowed = if *dtype == DType::F32 { 1e-5 * scale } else { 0.0 };
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
                    "{name}: {}: {tied_here} elements differ, all where the cut is left to ties or float order",
                    b.spec.name
                );
            }
            tied_total += tied_here;
        }
        println!(
            "{name}: {tied_total} elements differ at tied positions in all ({marked} of {elements} positions are tied); largest other difference {worst_untied:e}"
        );
        // The exemption must stay narrow, or the comparison would prove nothing.
        assert!(marked * 20 < elements, "{marked} of {elements} positions count as tied");
        assert!(
            problems.is_empty(),
            "{} elements differ away from ties:\n{}",
            problems.len(),
            problems[..problems.len().min(20)].join("\n")
        );
    });
}

#[test]
fn ties() {
    check_ties(FIXTURES, "ties");
}

#[test]
fn breadcrumbs() {
    check_ties(FIXTURES, "breadcrumbs");
}

#[test]
fn breadcrumbs_ties() {
    check_ties(FIXTURES, "breadcrumbs_ties");
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

fn gta(
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

/// SCE's weights depend on which positions its top-k keeps, so a different tie-break at
/// the cut moves every element slightly. Tensors without a tie must equal mergekit;
/// tensors with one are replayed with mergekit's tie-break (a dropped position is left
/// at the base value) and must then equal it.
#[test]
fn sce() {
    check_sce(FIXTURES);
}

/// The elements of an SCE tensor whose merged value no tie-break can change, found in the
/// test from the inputs (not from the code under test): the variance across the task
/// vectors (in f64, stored in the working dtype, as torch's `var`) is clearly below the
/// top-k cut, so the element is not selected and stays the base's; in float32 also those
/// clearly above it with a single non-zero task vector, whose value SCE's weights (which
/// the tied elements move) change by at most a rounding.
fn sce_beyond_ties(
    inputs: &[Vec<f32>],
    base: usize,
    topk: f32,
    working: DType,
    out: DType,
) -> Vec<bool> {
    let round = |x: f32| {
        let mut v = [x];
        amalgam_tensors::dtype::round_slice(working, &mut v);
        v[0]
    };
    let b = &inputs[base];
    let tvs: Vec<Vec<f32>> = (0..inputs.len())
        .filter(|&i| i != base)
        .map(|i| inputs[i].iter().zip(b).map(|(x, y)| round(x - y)).collect())
        .collect();
    let m = tvs.len() as f64;
    let var: Vec<f32> = (0..b.len())
        .map(|e| {
            let mean = tvs.iter().map(|t| f64::from(t[e])).sum::<f64>() / m;
            round((tvs.iter().map(|t| (f64::from(t[e]) - mean).powi(2)).sum::<f64>() / m) as f32)
        })
        .collect();
    let mut sorted: Vec<f32> = var.iter().copied().filter(|v| *v != 0.0).collect();
    sorted.sort_by(|x, y| y.total_cmp(x));
    let k = (sorted.len() as f64 * f64::from(topk)) as usize;
    let cut = if k == 0 { f32::INFINITY } else { sorted[k - 1] };
    let band = 1e-3 * cut.abs();
    (0..b.len())
        .map(|e| {
            let nonzero = tvs.iter().filter(|t| t[e] != 0.0).count();
            var[e] < cut - band || (out == DType::F32 && var[e] > cut + band && nonzero <= 1)
        })
        .collect()
}

/// SCE with its selection cut replayed as mergekit broke the tie (see above).
fn check_sce(set: &str) {
    use amalgam_merge::execute;
    use amalgam_merge::methods::{Kernel, whole::Whole};
    merge_and_bind(set, "sce", |bound, golden, ours| {
        let (mut tied_tensors, mut problems, mut compared_directly) = (0, Vec::new(), 0);
        for b in bound {
            let Kernel::Whole(whole) = &b.kernel else {
                panic!("sce is not a whole-tensor method")
            };
            let inputs = execute::whole_inputs(b).unwrap();
            let cols = b.spec.shape.last().copied().unwrap_or(1);
            let tied = whole.tied_positions(&inputs, cols, b.working).unwrap();
            let (dtype, want) = &golden[&b.spec.name];
            let want = want.values(*dtype);
            let &Whole::Sce { base, select_topk } = whole else { unreachable!() };
            let direct = ours[&b.spec.name].1.values(*dtype);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let allowed = if *dtype == DType::F32 { 1e-5 * scale } else { 0.0 };
            let base_row = &inputs[base];
            let got = if tied.iter().any(|t| *t) {
                tied_tensors += 1;
                // The binary's own output, wherever no tie-break can reach.
                let safe = sce_beyond_ties(&inputs, base, select_topk, b.working, *dtype);
                for (e, _) in safe.iter().enumerate().filter(|(_, s)| **s) {
                    compared_directly += 1;
                    if (direct[e] - want[e]).abs() > allowed {
                        problems.push(format!(
                            "{} element {e}: {} vs mergekit {}, beyond the tie-break's reach",
                            b.spec.name, direct[e], want[e]
                        ));
                    }
                }
                let mut replayed = whole
                    .sce_with_tie_break(&inputs, b.working, |e| want[e] != base_row[e])
                    .unwrap();
                amalgam_tensors::dtype::round_slice(*dtype, &mut replayed);
                replayed
            } else {
                direct
            };
            let worst = got.iter().zip(&want).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            if worst > allowed {
                problems.push(format!(
                    "{}: largest difference {worst:e} (scale {scale:e})",
                    b.spec.name
                ));
            }
        }
        println!(
            "sce ({set}): {tied_tensors} of {} tensors replayed with mergekit's tie-break; in \
             those, {compared_directly} elements beyond its reach compared directly",
            bound.len()
        );
        assert!(tied_tensors == 0 || compared_directly > 0, "no element compared directly");
        assert!(tied_tensors < bound.len(), "every tensor tied; the direct comparison never ran");
        assert!(problems.is_empty(), "sce differs from mergekit:\n{}", problems.join("\n"));
    });
}

/// arcee_fusion's threshold cut: torch's float32 KL divergences decide elements near it.
#[test]
fn arcee_fusion() {
    check_ties(FIXTURES, "arcee_fusion");
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

#[test]
fn half_precision_ties_family_differs_only_at_tied_positions() {
    for set in [BF16, FP16] {
        for name in ["ties", "breadcrumbs", "breadcrumbs_ties"] {
            check_ties(set, name);
        }
    }
}

#[test]
fn half_precision_sce() {
    check_sce(BF16);
    check_sce(FP16);
}

#[test]
fn half_precision_arcee_fusion_honours_the_dtype() {
    check_ties(BF16, "arcee_fusion");
    check_ties(FP16, "arcee_fusion");
}
