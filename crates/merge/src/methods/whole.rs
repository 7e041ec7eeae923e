//! Methods that need whole tensors at once — global norms, cosines or iterations over the
//! full vector — computed on in-memory copies of the inputs (the executor's memory bound
//! for these is a small multiple of the largest tensor, not of the model).
//!
//! Each follows mergekit's sequence of torch operations in the working dtype (see
//! [`Torch`]): bit-equal to mergekit where reductions round to bfloat16 or float16, and
//! within 1e-5 of each tensor's largest magnitude in float32, where torch sums in
//! another order.

use amalgam_tensors::DType;

use super::reduce;
use super::torch::{Torch, with_torch};

/// A whole-tensor method with its parameters bound.
#[derive(Clone, Debug, PartialEq)]
pub enum Whole {
    /// Model Stock: interpolate between the base and the fine-tunes' average by a ratio
    /// from the fine-tunes' mean pairwise cosine (per row with `filter_wise`).
    ModelStock { base: usize, filter_wise: bool },
    /// The Karcher (Fréchet) mean on the unit sphere, scaled by the mean norm.
    Karcher { max_iter: usize, tol: f32 },
    /// Barycentric interpolation on the hypersphere of the (base-relative) inputs, with
    /// the weights normalised to sum to 1 if `normalize`.
    MultiSlerp {
        base: Option<usize>,
        others: Vec<usize>,
        weights: Vec<f32>,
        normalize: bool,
        eps: f32,
    },
    /// SLERP of two (base-relative) inputs along vectors: the flattened tensor, its rows,
    /// or (row-wise) its columns.
    NuSlerp {
        base: Option<usize>,
        first: usize,
        second: usize,
        t: f64,
        /// One vector of all elements (set for any tensor that is not a matrix).
        flatten: bool,
        row_wise: bool,
    },
    /// The generalized task arithmetic family (ties, dare, breadcrumbs, della).
    Gta(super::gta::Gta),
    /// SCE: select high-variance positions, weight task vectors by their mean square,
    /// erase minority signs.
    Sce { base: usize, select_topk: f32 },
    /// Arcee Fusion: keep the fine-tune's change where its importance (|change| times
    /// the row's KL divergence) is an upper outlier.
    ArceeFusion { base: usize, other: usize, seed: u64 },
}

impl Whole {
    /// Positions where the result depends on how a sort orders equal values (see
    /// [`super::gta::Gta::tied_positions`]); `None` for methods without such a cut.
    /// For arcee_fusion in float32, positions whose importance lies within
    /// [`FUSION_BAND`] of the threshold, where float summation order decides the
    /// outcome; in a reduced dtype, those whose row's divergence hangs on how a softmax
    /// value at a rounding midpoint is rounded.
    pub fn tied_positions(
        &self,
        inputs: &[Vec<f32>],
        cols: usize,
        working: DType,
    ) -> Option<Vec<bool>> {
        with_torch!(working, w => self.tied_positions_in(inputs, cols, working, w))
    }

    fn tied_positions_in(
        &self,
        inputs: &[Vec<f32>],
        cols: usize,
        working: DType,
        w: impl Torch,
    ) -> Option<Vec<bool>> {
        match *self {
            Whole::Gta(ref gta) => Some(gta.tied_positions(inputs, working)),
            Whole::Sce { base, select_topk } if select_topk < 1.0 => {
                let var = variances(&task_vectors(inputs, base, w), w);
                let cut = sce_cut(&var, select_topk);
                Some(var.iter().map(|v| cut.tied && *v == cut.value).collect())
            }
            Whole::ArceeFusion { base, other, seed } => {
                let importance = fusion_importance(&inputs[base], &inputs[other], cols, w);
                let threshold = fusion_threshold(&importance, seed, w);
                if matches!(working, DType::F32 | DType::F64) {
                    let band = FUSION_BAND * threshold.abs();
                    Some(importance.iter().map(|i| (i - threshold).abs() <= band).collect())
                } else {
                    let (b, x) = (&inputs[base], &inputs[other]);
                    Some(fusion_rounding_dependent(b, x, cols, seed, w))
                }
            }
            _ => None,
        }
    }

    /// Merges whole tensors (`cols` elements per row) in the `working` dtype; the result
    /// is in f32. On CPUs with AVX2 and FMA the same code runs compiled for them: Rust
    /// never fuses `a * b + c` on its own, so both builds give the same bits.
    pub fn merge(&self, inputs: &[Vec<f32>], cols: usize, working: DType) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { self.merge_avx2(inputs, cols, working) };
        }
        with_torch!(working, w => self.merge_in(inputs, cols, working, w))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn merge_avx2(&self, inputs: &[Vec<f32>], cols: usize, working: DType) -> Vec<f32> {
        with_torch!(working, w => self.merge_in(inputs, cols, working, w))
    }

    #[inline(always)]
    fn merge_in(
        &self,
        inputs: &[Vec<f32>],
        cols: usize,
        working: DType,
        w: impl Torch,
    ) -> Vec<f32> {
        match *self {
            Whole::ModelStock { base, filter_wise } => {
                model_stock(inputs, base, if filter_wise { cols } else { inputs[0].len() }, w)
            }
            Whole::Karcher { max_iter, tol } => karcher(inputs, max_iter, tol, w),
            Whole::Gta(ref gta) => gta.merge(inputs, cols, working),
            Whole::Sce { base, select_topk } => sce(inputs, base, select_topk, |_| true, w),
            Whole::ArceeFusion { base, other, seed } => {
                arcee_fusion(&inputs[base], &inputs[other], cols, seed, w)
            }
            Whole::MultiSlerp { base, ref others, ref weights, normalize, eps } => {
                multislerp(inputs, base, others, weights, normalize, eps, w)
            }
            Whole::NuSlerp { base, first, second, t, flatten, row_wise } => {
                let relative = |i: usize| -> Vec<f32> {
                    match base {
                        Some(b) => w.sub(&inputs[i], &inputs[b]),
                        None => inputs[i].clone(),
                    }
                };
                let (v0, v1) = (relative(first), relative(second));
                let len = v0.len();
                let vectors = if flatten {
                    Vectors::Whole(len)
                } else if row_wise {
                    Vectors::Columns(cols)
                } else {
                    Vectors::Rows(cols)
                };
                let out = nuslerp(t, &v0, &v1, vectors, w);
                match base {
                    Some(b) => w.add(&inputs[b], &out),
                    None => out,
                }
            }
        }
    }

    /// SCE with the tie at its selection cut broken by `keep_tied` (called for each
    /// position whose variance equals the cut) instead of by position; `None` for other
    /// methods. Tests use it to replay another implementation's tie-break.
    pub fn sce_with_tie_break(
        &self,
        inputs: &[Vec<f32>],
        working: DType,
        keep_tied: impl Fn(usize) -> bool,
    ) -> Option<Vec<f32>> {
        match *self {
            Whole::Sce { base, select_topk } => {
                Some(with_torch!(working, w => sce(inputs, base, select_topk, &keep_tied, w)))
            }
            _ => None,
        }
    }
}

/// Model Stock over rows of `row` elements (the whole tensor as one row unless
/// filter-wise), in mergekit's order of operations.
#[inline(always)]
fn model_stock(inputs: &[Vec<f32>], base: usize, row: usize, w: impl Torch) -> Vec<f32> {
    let w0 = &inputs[base];
    let ws: Vec<&Vec<f32>> = (0..inputs.len()).filter(|&i| i != base).map(|i| &inputs[i]).collect();
    let n = ws.len();
    if n == 0 {
        return w0.clone();
    }
    let offsets: Vec<Vec<f32>> = ws.iter().map(|x| w.sub(x, w0)).collect();
    // `sum(ws) / n`: Python's sum adds the models one at a time.
    let mut average = ws[0].clone();
    for x in &ws[1..] {
        average = w.add(&average, x);
    }
    average.iter_mut().for_each(|v| *v = w.r(*v / n as f32));
    let floor = w.scalar(1e-6);
    let row = row.max(1);
    let mut out = vec![0f32; w0.len()];
    for start in (0..w0.len()).step_by(row) {
        let end = (start + row).min(w0.len());
        let mut cosines = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                let (da, db) = (&offsets[a][start..end], &offsets[b][start..end]);
                let product = w.r(w.norm(da) * w.norm(db));
                let cos = w.r(w.dot_of_products(da, db) / product.max(floor));
                cosines.push(cos.clamp(-1.0, 1.0));
            }
        }
        let cos = w.mean(&cosines);
        let denominator = w.r(1.0 + w.r((n - 1) as f32 * cos));
        let t = if denominator.abs() < 1e-6 { 0.0 } else { w.r(w.r(n as f32 * cos) / denominator) };
        let rest = w.r(1.0 - t);
        for e in start..end {
            out[e] = w.r(w.r(t * average[e]) + w.r(rest * w0[e]));
        }
    }
    out
}

/// The weighted Karcher mean with equal weights, as mergekit computes it: norms in
/// float32, unit vectors of inputs with norm above `tol`, a normalised weighted mean as
/// the start, then Riemannian gradient steps until the tangent is below `tol`.
#[inline(always)]
fn karcher(inputs: &[Vec<f32>], max_iter: usize, tol: f32, w: impl Torch) -> Vec<f32> {
    let len = inputs[0].len();
    if inputs.len() == 1 {
        return inputs[0].clone();
    }
    let tol = f64::from(tol);
    let alpha = 1.0 / inputs.len() as f64;
    let norms: Vec<f32> = inputs.iter().map(|x| reduce::norm2(x)).collect();
    let valid: Vec<usize> = (0..inputs.len()).filter(|&i| f64::from(norms[i]) > tol).collect();
    if valid.is_empty() {
        return vec![0.0; len];
    }
    let units: Vec<Vec<f32>> =
        valid.iter().map(|&i| inputs[i].iter().map(|v| w.r(v / norms[i])).collect()).collect();
    let alpha_sum: f64 = valid.iter().map(|_| alpha).sum();
    let alphas: Vec<f32> = valid.iter().map(|_| (alpha / alpha_sum) as f32).collect();
    let mut mean = vec![0f32; len];
    for (a, u) in alphas.iter().zip(&units) {
        mean.iter_mut().zip(u).for_each(|(m, x)| *m = w.r(*m + w.r(x * a)));
    }
    let mean_norm = reduce::norm2(&mean);
    if f64::from(mean_norm) < tol {
        mean = units[0].clone();
    } else {
        mean.iter_mut().for_each(|m| *m = w.r(*m / mean_norm));
    }
    let mut tangent = vec![0f32; len];
    for _ in 0..max_iter {
        tangent.fill(0.0);
        for (a, u) in alphas.iter().zip(&units) {
            let dot = w.dot(&mean, u).clamp(-1.0, 1.0);
            let theta = w.r(dot.acos());
            if f64::from(theta) < tol {
                continue;
            }
            let step = w.r(w.r(theta / w.r(theta.sin())) * a);
            for ((t, m), x) in tangent.iter_mut().zip(&mean).zip(u) {
                *t = w.r(*t + w.r(step * w.r(x - w.r(dot * m))));
            }
        }
        let tangent_norm = reduce::norm2(&tangent);
        if f64::from(tangent_norm) < tol {
            break;
        }
        // cos and sin are float32 0-dim tensors multiplied from the left: rounded first.
        let (c, s) = (w.r(tangent_norm.cos()), w.r(tangent_norm.sin()));
        for (m, t) in mean.iter_mut().zip(&tangent) {
            *m = w.r(w.r(c * *m) + w.r(s * w.r(t / tangent_norm)));
        }
        let unit_norm = reduce::norm2(&mean);
        if f64::from(unit_norm) > tol {
            mean.iter_mut().for_each(|m| *m = w.r(*m / unit_norm));
        }
    }
    let scale = w.r(norms.iter().fold(0f32, |s, n| s + alpha as f32 * n));
    mean.iter().map(|m| w.r(scale * m)).collect()
}

/// mergekit's multislerp: unit vectors of the flattened inputs, their weighted mean
/// normalised, the weighted tangent there, the exponential map back, scaled by the
/// weighted mean norm. A lone input is returned as it is, without the base.
#[inline(always)]
fn multislerp(
    inputs: &[Vec<f32>],
    base: Option<usize>,
    others: &[usize],
    weights: &[f32],
    normalize: bool,
    eps: f32,
    w: impl Torch,
) -> Vec<f32> {
    if others.len() == 1 {
        return inputs[others[0]].clone();
    }
    let xs: Vec<Vec<f32>> = others
        .iter()
        .map(|&i| match base {
            Some(b) => w.sub(&inputs[i], &inputs[b]),
            None => inputs[i].clone(),
        })
        .collect();
    let mut weights: Vec<f32> = weights.iter().map(|v| w.r(*v)).collect();
    if normalize {
        let total = w.sum(weights.iter().copied());
        weights.iter_mut().for_each(|v| *v = w.r(*v / total));
    }
    let eps_r = w.scalar(f64::from(eps));
    let len = xs[0].len();
    let norms: Vec<f32> = xs.iter().map(|x| w.norm(x)).collect();
    let units: Vec<Vec<f32>> = xs
        .iter()
        .zip(&norms)
        .map(|(x, n)| {
            let d = w.r(n + eps_r);
            x.iter().map(|v| w.r(v / d)).collect()
        })
        .collect();
    let weighted_sum = |vectors: &[Vec<f32>], e: usize| {
        w.sum(vectors.iter().zip(&weights).map(|(v, c)| w.r(v[e] * c)))
    };
    let add_base = |mut out: Vec<f32>| {
        if let Some(b) = base {
            out.iter_mut().zip(&inputs[b]).for_each(|(o, x)| *o = w.r(*o + x));
        }
        out
    };
    let mean: Vec<f32> = (0..len).map(|e| weighted_sum(&units, e)).collect();
    let mean_norm = w.norm(&mean);
    if f64::from(mean_norm) < f64::from(eps) {
        // Antipodal inputs: the weighted sum (mergekit raises for more than two).
        return add_base((0..len).map(|e| weighted_sum(&xs, e)).collect());
    }
    let mean: Vec<f32> = mean.iter().map(|m| w.r(m / mean_norm)).collect();
    // Each unit vector's tangent at the mean, weighted and summed over the inputs.
    let dots: Vec<f32> = units.iter().map(|u| w.dot_of_products(u, &mean)).collect();
    let tangent: Vec<f32> = (0..len)
        .map(|e| {
            let terms = units.iter().zip(&dots).zip(&weights);
            w.sum(terms.map(|((u, d), c)| w.r(w.r(u[e] - w.r(d * mean[e])) * c)))
        })
        .collect();
    let tangent_norm = w.r(w.norm(&tangent) + eps_r);
    let c = w.r(tangent_norm.cos());
    let s = w.r(w.r(tangent_norm.sin()) / tangent_norm);
    let avg_norm = w.sum(norms.iter().zip(&weights).map(|(n, c)| w.r(n * c)));
    add_base(
        mean.iter()
            .zip(&tangent)
            .map(|(m, t)| w.r(w.r(w.r(m * c) + w.r(t * s)) * avg_norm))
            .collect(),
    )
}

/// Each non-base input minus the base.
fn task_vectors(inputs: &[Vec<f32>], base: usize, w: impl Torch) -> Vec<Vec<f32>> {
    (0..inputs.len()).filter(|&i| i != base).map(|i| w.sub(&inputs[i], &inputs[base])).collect()
}

/// mergekit's SCE merge; `keep_tied` decides positions whose variance equals the cut
/// when the cut falls inside a group of equal variances (mergekit leaves that to
/// `torch.topk`; by default the earliest positions are kept).
fn sce(
    inputs: &[Vec<f32>],
    base: usize,
    select_topk: f32,
    keep_tied: impl Fn(usize) -> bool,
    w: impl Torch,
) -> Vec<f32> {
    let b = &inputs[base];
    let mut tvs = task_vectors(inputs, base, w);
    if tvs.is_empty() {
        return b.clone();
    }
    if select_topk < 1.0 {
        let keep = sce_select(&tvs, select_topk, keep_tied, w);
        for tv in &mut tvs {
            tv.iter_mut().zip(&keep).for_each(|(v, k)| {
                if !k {
                    *v = 0.0
                }
            });
        }
    }
    let weights = sce_weights(&tvs, w);
    let floor = w.scalar(1e-6);
    let mut out = b.clone();
    for (e, o) in out.iter_mut().enumerate() {
        let positive = tvs.iter().map(|tv| f64::from(tv[e])).sum::<f64>() >= 0.0;
        let erased = |tv: &Vec<f32>, c: f32| {
            let v = tv[e];
            if v != 0.0 && (v > 0.0) == positive { c } else { 0.0 }
        };
        let merged = w.sum(tvs.iter().zip(&weights).map(|(tv, c)| w.r(tv[e] * erased(tv, *c))));
        let divisor = w.sum(tvs.iter().zip(&weights).map(|(tv, c)| erased(tv, *c))).max(floor);
        *o = w.r(*o + w.r(merged / divisor));
    }
    out
}

/// SCE's matrix weights: each task vector's mean square over their sum (uniform when
/// the sum is below 1e-6).
fn sce_weights(tvs: &[Vec<f32>], w: impl Torch) -> Vec<f32> {
    let squares: Vec<f32> = tvs
        .iter()
        .map(|tv| {
            let sum: f64 = tv.iter().map(|v| f64::from(w.r(v * v))).sum();
            w.r((sum / tv.len().max(1) as f64) as f32)
        })
        .collect();
    // `.item()` makes the sum a Python number, which divides at float32.
    let total = w.sum(squares.iter().copied());
    if total.abs() < 1e-6 {
        return vec![w.r(1.0 / tvs.len() as f32); tvs.len()];
    }
    squares.iter().map(|s| w.r(s / total)).collect()
}

/// Where SCE's top-k selection cuts the variances.
struct Cut {
    /// How many positions are kept.
    k: usize,
    /// The smallest kept variance.
    value: f32,
    /// Whether positions left out share that variance.
    tied: bool,
}

/// The cut keeping `density` of the positions with non-zero variance.
fn sce_cut(var: &[f32], density: f32) -> Cut {
    let nonzero = var.iter().filter(|v| **v != 0.0).count();
    let k = if density <= 0.0 { 0 } else { (nonzero as f64 * f64::from(density)) as usize };
    let mut sorted = var.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let value = if k == 0 { f32::INFINITY } else { sorted[k - 1] };
    let tied = k > 0 && k < sorted.len() && sorted[k] == value && value != 0.0;
    Cut { k, value, tied }
}

/// SCE's selection: the `density` fraction (of positions with non-zero variance) of
/// largest variance across models, with ties at the cut decided by `keep_tied` while
/// places remain.
fn sce_select(
    tvs: &[Vec<f32>],
    density: f32,
    keep_tied: impl Fn(usize) -> bool,
    w: impl Torch,
) -> Vec<bool> {
    let var = variances(tvs, w);
    let cut = sce_cut(&var, density);
    let mut keep: Vec<bool> = var.iter().map(|v| *v > cut.value).collect();
    let mut places = cut.k - keep.iter().filter(|k| **k).count();
    for (e, v) in var.iter().enumerate() {
        if places > 0 && *v == cut.value && (!cut.tied || keep_tied(e)) {
            keep[e] = true;
            places -= 1;
        }
    }
    keep
}

/// The population variance across task vectors at each position, accumulated in f64
/// and stored in the working dtype as torch's `var` does (so equal variances tie as they
/// do there).
fn variances(tvs: &[Vec<f32>], w: impl Torch) -> Vec<f32> {
    let m = tvs.len() as f64;
    (0..tvs[0].len())
        .map(|e| {
            let mean = tvs.iter().map(|tv| f64::from(tv[e])).sum::<f64>() / m;
            w.r((tvs.iter().map(|tv| (f64::from(tv[e]) - mean).powi(2)).sum::<f64>() / m) as f32)
        })
        .collect()
}

/// The relative distance from arcee_fusion's threshold within which a float32
/// importance may fall on either side of it in mergekit. torch sums each row's KL divergence in its own
/// order, where the terms for two nearly equal softmaxes largely cancel, so importances
/// near the threshold are decided by rounding.
pub const FUSION_BAND: f32 = 5e-2;

/// Arcee Fusion: a change is kept where its importance reaches `median + 1.5 IQR` of
/// all importances.
fn arcee_fusion(b: &[f32], x: &[f32], cols: usize, seed: u64, w: impl Torch) -> Vec<f32> {
    let importance = fusion_importance(b, x, cols, w);
    let threshold = fusion_threshold(&importance, seed, w);
    // mergekit's mask is float32, so `b + (x - b) * mask` is a float32 sum of the
    // rounded change.
    b.iter()
        .zip(x)
        .zip(&importance)
        .map(|((b, x), i)| if *i >= threshold { b + w.r(x - b) } else { *b })
        .collect()
}

/// Importance `|x - b| * KL(softmax(x) + 1e-8 || softmax(b) + 1e-8)`, the divergence
/// taken per row of `cols` elements.
fn fusion_importance(b: &[f32], x: &[f32], cols: usize, w: impl Torch) -> Vec<f32> {
    let cols = cols.max(1);
    let mut importance = vec![0f32; b.len()];
    for start in (0..b.len()).step_by(cols) {
        let end = (start + cols).min(b.len());
        let p = shifted_softmax(&softmax(&x[start..end]), w);
        let q = shifted_softmax(&softmax(&b[start..end]), w);
        let kl = row_kl(&p, &q, w);
        for e in start..end {
            importance[e] = w.r(w.r(x[e] - b[e]).abs() * kl);
        }
    }
    importance
}

/// `softmax + 1e-8` in the working dtype, from the exact softmax.
fn shifted_softmax(exact: &[f64], w: impl Torch) -> Vec<f32> {
    let eps = w.scalar(1e-8);
    exact.iter().map(|p| w.r(w.r(*p as f32) + eps)).collect()
}

/// One row's KL divergence of the shifted softmaxes, `sum(p * log(p / q))`.
fn row_kl(p: &[f32], q: &[f32], w: impl Torch) -> f32 {
    w.sum(p.iter().zip(q).map(|(p, q)| w.r(p * w.r(w.r(p / q).ln()))))
}

/// How close (relative) to a rounding midpoint of the working dtype a softmax value may
/// be for torch's float32 softmax (a few float32 steps off the exact one) to round it
/// to the other neighbour.
const MIDPOINT_SLACK: f64 = 1e-6;

/// Rows with more values at a midpoint than this count as wholly rounding-dependent
/// (each combination of roundings is tried up to it).
const MAX_FLIPS: usize = 10;

/// For arcee_fusion in a reduced dtype: positions whose keep decision depends on how
/// torch's float32 softmax rounds a value lying at a rounding midpoint. A row's KL
/// divergence is a small difference of nearly equal terms, so one such rounding moves
/// it, and every importance of the row, by far more than a rounding step; and the
/// quartiles, so the threshold, move with them.
fn fusion_rounding_dependent(
    b: &[f32],
    x: &[f32],
    cols: usize,
    seed: u64,
    w: impl Torch,
) -> Vec<bool> {
    let cols = cols.max(1);
    let (mut low, mut high) = (vec![0f32; b.len()], vec![0f32; b.len()]);
    for start in (0..b.len()).step_by(cols) {
        let end = (start + cols).min(b.len());
        let (kl_low, kl_high) = row_kl_range(&b[start..end], &x[start..end], w);
        for e in start..end {
            let change = w.r(x[e] - b[e]).abs();
            (low[e], high[e]) = (w.r(change * kl_low), w.r(change * kl_high));
        }
    }
    // Importances grow with the KL, so the quartiles lie between those of the low and
    // the high importances, and the threshold between these bounds.
    let ([q1_low, median_low, q3_low], [q1_high, median_high, q3_high]) =
        (fusion_quartiles(&low, seed), fusion_quartiles(&high, seed));
    let least = w.r(median_low + w.r(1.5 * w.r(q3_low - q1_high)));
    let most = w.r(median_high + w.r(1.5 * w.r(q3_high - q1_low)));
    low.iter().zip(&high).map(|(l, h)| !(*l >= most || *h < least)).collect()
}

/// The least and greatest KL divergence a row may have in torch: every combination of
/// other roundings for the softmax values within [`MIDPOINT_SLACK`] of a midpoint
/// (the whole real line past [`MAX_FLIPS`] of them).
fn row_kl_range(b: &[f32], x: &[f32], w: impl Torch) -> (f32, f32) {
    let (exact_p, exact_q) = (softmax(x), softmax(b));
    let (p, q) = (shifted_softmax(&exact_p, w), shifted_softmax(&exact_q, w));
    // Each value that could round the other way: (in p, index, other rounding).
    let mut flips = Vec::new();
    for (exact, in_p) in [(&exact_p, true), (&exact_q, false)] {
        for (j, value) in exact.iter().enumerate() {
            let rounded = w.r(w.r(*value as f32) + w.scalar(1e-8));
            for nudged in [value * (1.0 - MIDPOINT_SLACK), value * (1.0 + MIDPOINT_SLACK)] {
                let other = w.r(w.r(nudged as f32) + w.scalar(1e-8));
                if other != rounded {
                    flips.push((in_p, j, other));
                }
            }
        }
    }
    if flips.len() > MAX_FLIPS {
        return (f32::NEG_INFINITY, f32::INFINITY);
    }
    let (mut low, mut high) = (f32::INFINITY, f32::NEG_INFINITY);
    // Every combination of roundings, the nominal one (no flips) included.
    for subset in 0..1u32 << flips.len() {
        let (mut p, mut q) = (p.clone(), q.clone());
        for (bit, &(in_p, j, other)) in flips.iter().enumerate() {
            if subset >> bit & 1 == 1 {
                if in_p { p[j] = other } else { q[j] = other }
            }
        }
        let kl = row_kl(&p, &q, w);
        (low, high) = (low.min(kl), high.max(kl));
    }
    (low, high)
}

/// `median + 1.5 IQR` of the importances (see [`fusion_quartiles`]).
fn fusion_threshold(importance: &[f32], seed: u64, w: impl Torch) -> f32 {
    let [q1, median, q3] = fusion_quartiles(importance, seed);
    w.r(median + w.r(1.5 * w.r(q3 - q1)))
}

/// The first quartile, median and third quartile, read at `floor(q (n - 1))` of the
/// sorted importances, from a seeded sample of 10^6 (with replacement) for larger
/// tensors.
fn fusion_quartiles(importance: &[f32], seed: u64) -> [f32; 3] {
    const SAMPLE: usize = 1_000_000;
    let mut sample: Vec<f32> = if importance.len() > SAMPLE {
        let mut rng = super::gta::SplitMix64(seed);
        (0..SAMPLE)
            .map(|_| importance[(rng.next_u64() % importance.len() as u64) as usize])
            .collect()
    } else {
        importance.to_vec()
    };
    if sample.is_empty() {
        return [0.0; 3];
    }
    sample.sort_by(f32::total_cmp);
    let at = |q: f64| sample[(q * (sample.len() - 1) as f64) as usize];
    [at(0.25), at(0.5), at(0.75)]
}

/// Softmax in f64.
fn softmax(v: &[f32]) -> Vec<f64> {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    let exp: Vec<f64> = v.iter().map(|x| f64::from(x - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// How nuslerp groups elements into vectors.
#[derive(Clone, Copy)]
enum Vectors {
    /// One vector of all elements.
    Whole(usize),
    /// Rows of this many columns.
    Rows(usize),
    /// Columns of a matrix with this many columns.
    Columns(usize),
}

impl Vectors {
    /// (number of vectors, elements per vector) for `len` elements.
    fn shape(self, len: usize) -> (usize, usize) {
        match self {
            Vectors::Whole(n) => (1, n),
            Vectors::Rows(cols) => (len / cols.max(1), cols.max(1)),
            Vectors::Columns(cols) => (cols.max(1), len / cols.max(1)),
        }
    }

    /// The element index of entry `j` of vector `k`.
    fn index(self, k: usize, j: usize) -> usize {
        match self {
            Vectors::Whole(_) => j,
            Vectors::Rows(cols) => k * cols + j,
            Vectors::Columns(cols) => j * cols + k,
        }
    }
}

/// mergekit's nuslerp on each vector: normalise (norm clamped at 1e-7), interpolate the
/// raw vectors with SLERP weights, or linearly where nearly collinear.
#[inline(always)]
fn nuslerp(t: f64, v0: &[f32], v1: &[f32], vectors: Vectors, w: impl Torch) -> Vec<f32> {
    let len = v0.len();
    let (count, size) = vectors.shape(len);
    let floor = w.scalar(1e-7);
    // Python floats multiply tensors at float32.
    let (t32, rest) = (t as f32, (1.0 - t) as f32);
    let mut out = vec![0f32; len];
    for k in 0..count {
        let gather =
            |v: &[f32]| -> Vec<f32> { (0..size).map(|j| v[vectors.index(k, j)]).collect() };
        let (x0, x1) = (gather(v0), gather(v1));
        let unit = |x: &[f32]| -> Vec<f32> {
            let n = match vectors {
                Vectors::Columns(_) => w.norm_strided(x),
                _ => w.norm(x),
            }
            .max(floor);
            x.iter().map(|v| w.r(v / n)).collect()
        };
        let cos = w.dot_of_products(&unit(&x0), &unit(&x1)).clamp(-1.0, 1.0);
        let collinear = w.r(1.0 - w.r(cos * cos)) <= 1e-16;
        let result: Vec<f32> = if collinear {
            x0.iter().zip(&x1).map(|(a, b)| w.r(w.r(rest * a) + w.r(t32 * b))).collect()
        } else {
            let theta = w.r(cos.acos());
            let sin_theta = w.r(theta.sin());
            let (a, b) = (w.r(w.r(theta * rest).sin()), w.r(w.r(theta * t32).sin()));
            x0.iter().zip(&x1).map(|(p, q)| w.r(w.r(w.r(a * p) + w.r(b * q)) / sin_theta)).collect()
        };
        for (j, r) in result.into_iter().enumerate() {
            out[vectors.index(k, j)] = r;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const F32: super::super::torch::F32 = super::super::torch::F32;

    #[test]
    fn model_stock_of_identical_offsets_is_the_average() {
        // Collinear offsets: cos = 1, t = N / (1 + N - 1) = 1, so the output is the mean.
        let base = vec![1.0, 1.0];
        let a = vec![2.0, 3.0];
        let b = vec![3.0, 5.0];
        let out = model_stock(&[base, a, b], 0, 2, F32);
        assert!((out[0] - 2.5).abs() < 1e-6 && (out[1] - 4.0).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn sce_by_hand() {
        let inputs = [vec![0.0; 4], vec![1.0, -1.0, 2.0, 0.0], vec![3.0, 1.0, -1.0, 0.0]];
        // Weights mean(tau^2): 1.5 and 2.75, normalised. Element 0: both positive, weighted
        // mean; 1: sum 0 counts as positive, so only +1; 2: sum 1, only +2; 3: nothing.
        let (c1, c2) = (1.5 / 4.25, 2.75 / 4.25);
        let expected = [(c1 + 3.0 * c2) / (c1 + c2), 1.0, 2.0, 0.0];
        let out = sce(&inputs, 0, 1.0, |_| true, F32);
        assert!(out.iter().zip(expected).all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6), "{out:?}");
        // select_topk 0.5 of 3 non-zero variances keeps one position: element 2 (2.25).
        assert_eq!(sce(&inputs, 0, 0.5, |_| true, F32), [0.0, 0.0, 2.0, 0.0]);
        assert_eq!(sce(&inputs[..1], 0, 0.5, |_| true, F32), [0.0; 4], "no task vectors");
    }

    #[test]
    fn arcee_fusion_keeps_only_the_outlier_change() {
        // One row: importance is |change| times the row's KL divergence, so the
        // threshold is median + 1.5 IQR of the changes: 0.4 + 1.5 * (0.6 - 0.2) = 1.0.
        let b = vec![0.0f32; 8];
        let x = vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 5.0];
        let out = arcee_fusion(&b, &x, 8, 0, F32);
        assert_eq!(out, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0]);
        assert_eq!(arcee_fusion(&b, &b, 8, 0, F32), b, "no change, nothing kept");
    }

    #[test]
    fn karcher_of_equal_norm_orthogonal_vectors_bisects() {
        let out = karcher(&[vec![1.0, 0.0], vec![0.0, 1.0]], 20, 1e-7, F32);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((out[0] - h).abs() < 1e-5 && (out[1] - h).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn nuslerp_rows_and_columns() {
        // [[1, 0], [1, 0]] toward [[0, 1], [1, 0]] at t = 0.5.
        let (v0, v1) = (vec![1.0, 0.0, 1.0, 0.0], vec![0.0, 1.0, 1.0, 0.0]);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let rows = nuslerp(0.5, &v0, &v1, Vectors::Rows(2), F32);
        let expected = [h, h, 1.0, 0.0];
        assert!(rows.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{rows:?}");
        // Column 0 is [1, 1] toward [0, 1], 45 degrees apart.
        let columns = nuslerp(0.5, &v0, &v1, Vectors::Columns(2), F32);
        let a = ((std::f64::consts::PI / 8.0).sin() / (std::f64::consts::PI / 4.0).sin()) as f32;
        assert!(
            (columns[0] - a).abs() < 1e-6 && (columns[2] - 2.0 * a).abs() < 1e-6,
            "{columns:?}"
        );
        // A 1×2 matrix row-wise: two one-element columns, each collinear, so lerp.
        assert_eq!(nuslerp(0.5, &[1.0, 2.0], &[3.0, 4.0], Vectors::Columns(2), F32), [2.0, 3.0]);
    }
}
