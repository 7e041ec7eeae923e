//! The sign-election and top-k methods against mergekit 0.1.5 (ties, breadcrumbs,
//! breadcrumbs_ties, sce, arcee_fusion): equal everywhere except where torch's order of
//! equal magnitudes at a cut decides, positions the tests find from the inputs themselves.

use std::path::Path;

use amalgam_tensors::DType;

use crate::common::*;
use crate::methods::*;

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
