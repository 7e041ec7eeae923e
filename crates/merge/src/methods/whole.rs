//! Methods that need whole tensors at once — global norms, cosines or iterations over the
//! full vector — computed on in-memory copies of the inputs (the executor's memory bound
//! for these is a small multiple of the largest tensor, not of the model).
//!
//! Norms and dot products accumulate in f64; mergekit's float32 results for these
//! methods are matched within 1e-5 of each tensor's largest magnitude.

/// A whole-tensor method with its parameters bound.
#[derive(Clone, Debug, PartialEq)]
pub enum Whole {
    /// Model Stock: interpolate between the base and the fine-tunes' average by a ratio
    /// from the fine-tunes' mean pairwise cosine (per row with `filter_wise`).
    ModelStock { base: usize, filter_wise: bool },
    /// The Karcher (Fréchet) mean on the unit sphere, scaled by the mean norm.
    Karcher { max_iter: usize, tol: f32 },
    /// Barycentric interpolation on the hypersphere of the (base-relative) inputs.
    MultiSlerp { base: Option<usize>, others: Vec<usize>, weights: Vec<f32>, eps: f32 },
    /// SLERP of two (base-relative) inputs along vectors: the flattened tensor, its rows,
    /// or (row-wise) its columns.
    NuSlerp {
        base: Option<usize>,
        first: usize,
        second: usize,
        t: f32,
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

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

impl Whole {
    /// Positions where the result depends on how a sort orders equal values (see
    /// [`super::gta::Gta::tied_positions`]); `None` for methods without such a cut.
    /// For arcee_fusion, positions whose importance lies within [`FUSION_BAND`] of the
    /// threshold, where float summation order decides the outcome.
    pub fn tied_positions(&self, inputs: &[Vec<f32>], cols: usize) -> Option<Vec<bool>> {
        match *self {
            Whole::Gta(ref gta) => Some(gta.tied_positions(inputs)),
            Whole::Sce { base, select_topk } if select_topk < 1.0 => {
                let var = variances(&task_vectors(inputs, base));
                let cut = sce_cut(&var, select_topk);
                Some(var.iter().map(|v| cut.tied && *v == cut.value).collect())
            }
            Whole::ArceeFusion { base, other, seed } => {
                let importance = fusion_importance(&inputs[base], &inputs[other], cols);
                let threshold = fusion_threshold(&importance, seed);
                let band = FUSION_BAND * threshold.abs();
                Some(importance.iter().map(|i| (i - threshold).abs() <= band).collect())
            }
            _ => None,
        }
    }

    /// Merges whole tensors (`cols` elements per row); the result is in f32.
    pub fn merge(&self, inputs: &[Vec<f32>], cols: usize) -> Vec<f32> {
        match *self {
            Whole::ModelStock { base, filter_wise } => {
                model_stock(inputs, base, if filter_wise { cols } else { inputs[0].len() })
            }
            Whole::Karcher { max_iter, tol } => karcher(inputs, max_iter, tol),
            Whole::Gta(ref gta) => gta.merge(inputs, cols),
            Whole::Sce { base, select_topk } => sce(inputs, base, select_topk, |_| true),
            Whole::ArceeFusion { base, other, seed } => {
                arcee_fusion(&inputs[base], &inputs[other], cols, seed)
            }
            Whole::MultiSlerp { base, ref others, ref weights, eps } => {
                multislerp(inputs, base, others, weights, eps)
            }
            Whole::NuSlerp { base, first, second, t, flatten, row_wise } => {
                let relative = |i: usize| -> Vec<f32> {
                    match base {
                        Some(b) => inputs[i].iter().zip(&inputs[b]).map(|(x, y)| x - y).collect(),
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
                let mut out = nuslerp(t, &v0, &v1, vectors);
                if let Some(b) = base {
                    out.iter_mut().zip(&inputs[b]).for_each(|(o, x)| *o += x);
                }
                out
            }
        }
    }

    /// SCE with the tie at its selection cut broken by `keep_tied` (called for each
    /// position whose variance equals the cut) instead of by position; `None` for other
    /// methods. Tests use it to replay another implementation's tie-break.
    pub fn sce_with_tie_break(
        &self,
        inputs: &[Vec<f32>],
        keep_tied: impl Fn(usize) -> bool,
    ) -> Option<Vec<f32>> {
        match *self {
            Whole::Sce { base, select_topk } => Some(sce(inputs, base, select_topk, keep_tied)),
            _ => None,
        }
    }
}

/// Model Stock over rows of `row` elements (the whole tensor as one row unless
/// filter-wise).
fn model_stock(inputs: &[Vec<f32>], base: usize, row: usize) -> Vec<f32> {
    let w0 = &inputs[base];
    let ws: Vec<&Vec<f32>> = (0..inputs.len()).filter(|&i| i != base).map(|i| &inputs[i]).collect();
    let n = ws.len();
    let offsets: Vec<Vec<f32>> =
        ws.iter().map(|w| w.iter().zip(w0).map(|(x, b)| x - b).collect()).collect();
    let average: Vec<f32> =
        (0..w0.len()).map(|e| ws.iter().fold(0f32, |s, w| s + w[e]) / n as f32).collect();
    let mut out = vec![0f32; w0.len()];
    let row = row.max(1);
    for start in (0..w0.len()).step_by(row) {
        let end = (start + row).min(w0.len());
        let mut cosines = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                let (da, db) = (&offsets[a][start..end], &offsets[b][start..end]);
                let product = (norm(da) * norm(db)).max(1e-6);
                cosines.push((dot(da, db) / product).clamp(-1.0, 1.0));
            }
        }
        let cos = cosines.iter().sum::<f64>() / cosines.len().max(1) as f64;
        let denominator = 1.0 + (n as f64 - 1.0) * cos;
        let t = if denominator.abs() < 1e-6 { 0.0 } else { n as f64 * cos / denominator } as f32;
        for e in start..end {
            out[e] = t * average[e] + (1.0 - t) * w0[e];
        }
    }
    out
}

/// The weighted Karcher mean with equal weights, as mergekit computes it: unit vectors of
/// inputs with norm above `tol`, a normalised weighted mean as the start, then Riemannian
/// gradient steps until the tangent is below `tol`.
fn karcher(inputs: &[Vec<f32>], max_iter: usize, tol: f32) -> Vec<f32> {
    if inputs.len() == 1 {
        return inputs[0].clone();
    }
    let alpha = 1.0 / inputs.len() as f64;
    let norms: Vec<f64> = inputs.iter().map(|x| norm(x)).collect();
    let tol = f64::from(tol);
    let units: Vec<Vec<f32>> = inputs
        .iter()
        .zip(&norms)
        .filter(|(_, n)| **n > tol)
        .map(|(x, n)| x.iter().map(|v| (f64::from(*v) / n) as f32).collect())
        .collect();
    if units.is_empty() {
        return vec![0.0; inputs[0].len()];
    }
    let w = 1.0 / units.len() as f64;
    let len = inputs[0].len();
    let mut mean: Vec<f32> =
        (0..len).map(|e| units.iter().map(|u| w * f64::from(u[e])).sum::<f64>() as f32).collect();
    let mean_norm = norm(&mean);
    if mean_norm < tol {
        mean = units[0].clone();
    } else {
        mean.iter_mut().for_each(|v| *v = (f64::from(*v) / mean_norm) as f32);
    }
    for _ in 0..max_iter {
        let mut tangent = vec![0f64; len];
        for u in &units {
            let d = dot(&mean, u).clamp(-1.0, 1.0);
            let theta = d.acos();
            if theta < tol {
                continue;
            }
            let k = w * theta / theta.sin();
            for ((t, m), x) in tangent.iter_mut().zip(&mean).zip(u) {
                *t += k * (f64::from(*x) - d * f64::from(*m));
            }
        }
        let tangent_norm = tangent.iter().map(|t| t * t).sum::<f64>().sqrt();
        if tangent_norm < tol {
            break;
        }
        let (c, s) = (tangent_norm.cos(), tangent_norm.sin());
        for (m, t) in mean.iter_mut().zip(&tangent) {
            *m = (c * f64::from(*m) + s * t / tangent_norm) as f32;
        }
        let unit_norm = norm(&mean);
        if unit_norm > tol {
            mean.iter_mut().for_each(|v| *v = (f64::from(*v) / unit_norm) as f32);
        }
    }
    let scale: f64 = norms.iter().map(|n| alpha * n).sum();
    mean.iter().map(|m| (scale * f64::from(*m)) as f32).collect()
}

/// mergekit's multislerp: unit vectors of the flattened inputs, their weighted mean
/// normalised, the weighted tangent there, the exponential map back, scaled by the
/// weighted mean norm. A lone input is returned as it is, without the base.
fn multislerp(
    inputs: &[Vec<f32>],
    base: Option<usize>,
    others: &[usize],
    weights: &[f32],
    eps: f32,
) -> Vec<f32> {
    if others.len() == 1 {
        return inputs[others[0]].clone();
    }
    let xs: Vec<Vec<f32>> = others
        .iter()
        .map(|&i| match base {
            Some(b) => inputs[i].iter().zip(&inputs[b]).map(|(x, y)| x - y).collect(),
            None => inputs[i].clone(),
        })
        .collect();
    let w: Vec<f64> = weights.iter().map(|x| f64::from(*x)).collect();
    let eps = f64::from(eps);
    let norms: Vec<f64> = xs.iter().map(|x| norm(x)).collect();
    let len = xs[0].len();
    let unit = |m: usize, e: usize| f64::from(xs[m][e]) / (norms[m] + eps);
    let mean: Vec<f64> = (0..len).map(|e| (0..xs.len()).map(|m| w[m] * unit(m, e)).sum()).collect();
    let mean_norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    let add_base = |mut out: Vec<f32>| {
        if let Some(b) = base {
            out.iter_mut().zip(&inputs[b]).for_each(|(o, x)| *o += x);
        }
        out
    };
    if mean_norm < eps {
        // Antipodal pair: fall back to the weighted sum (mergekit raises for more inputs).
        let out = (0..len)
            .map(|e| (0..xs.len()).map(|m| w[m] * f64::from(xs[m][e])).sum::<f64>() as f32)
            .collect();
        return add_base(out);
    }
    let mean: Vec<f64> = mean.iter().map(|v| v / mean_norm).collect();
    let dots: Vec<f64> =
        (0..xs.len()).map(|m| (0..len).map(|e| unit(m, e) * mean[e]).sum()).collect();
    let tangent: Vec<f64> = (0..len)
        .map(|e| (0..xs.len()).map(|m| w[m] * (unit(m, e) - dots[m] * mean[e])).sum())
        .collect();
    let tangent_norm = tangent.iter().map(|v| v * v).sum::<f64>().sqrt() + eps;
    let avg_norm: f64 = norms.iter().zip(&w).map(|(n, w)| n * w).sum();
    let (c, s) = (tangent_norm.cos(), tangent_norm.sin() / tangent_norm);
    let out = (0..len).map(|e| ((mean[e] * c + tangent[e] * s) * avg_norm) as f32).collect();
    add_base(out)
}

/// Each non-base input minus the base.
fn task_vectors(inputs: &[Vec<f32>], base: usize) -> Vec<Vec<f32>> {
    let b = &inputs[base];
    (0..inputs.len())
        .filter(|&i| i != base)
        .map(|i| inputs[i].iter().zip(b).map(|(x, y)| x - y).collect())
        .collect()
}

/// mergekit's SCE merge; `keep_tied` decides positions whose variance equals the cut
/// when the cut falls inside a group of equal variances (mergekit leaves that to
/// `torch.topk`; by default the earliest positions are kept).
fn sce(
    inputs: &[Vec<f32>],
    base: usize,
    select_topk: f32,
    keep_tied: impl Fn(usize) -> bool,
) -> Vec<f32> {
    let b = &inputs[base];
    let n = b.len();
    let mut tvs = task_vectors(inputs, base);
    if tvs.is_empty() {
        return b.clone();
    }
    if select_topk < 1.0 {
        let keep = sce_select(&tvs, select_topk, keep_tied);
        for tv in &mut tvs {
            tv.iter_mut().zip(&keep).for_each(|(v, k)| {
                if !k {
                    *v = 0.0
                }
            });
        }
    }
    let squares: Vec<f64> = tvs
        .iter()
        .map(|tv| tv.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / n as f64)
        .collect();
    let total: f64 = squares.iter().sum();
    let weights: Vec<f64> = if total.abs() < 1e-6 {
        vec![1.0 / tvs.len() as f64; tvs.len()]
    } else {
        squares.iter().map(|s| s / total).collect()
    };
    let mut out = b.clone();
    for (e, o) in out.iter_mut().enumerate() {
        let positive = tvs.iter().map(|tv| tv[e]).sum::<f32>() >= 0.0;
        let (mut merged, mut weight) = (0f64, 0f64);
        for (tv, w) in tvs.iter().zip(&weights) {
            let v = tv[e];
            if v != 0.0 && (v > 0.0) == positive {
                merged += f64::from(v) * w;
                weight += w;
            }
        }
        *o += (merged / weight.max(1e-6)) as f32;
    }
    out
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
fn sce_select(tvs: &[Vec<f32>], density: f32, keep_tied: impl Fn(usize) -> bool) -> Vec<bool> {
    let var = variances(tvs);
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
/// and stored in f32 as torch's `var` does (so equal variances tie as they do there).
fn variances(tvs: &[Vec<f32>]) -> Vec<f32> {
    let m = tvs.len() as f64;
    (0..tvs[0].len())
        .map(|e| {
            let mean = tvs.iter().map(|tv| f64::from(tv[e])).sum::<f64>() / m;
            (tvs.iter().map(|tv| (f64::from(tv[e]) - mean).powi(2)).sum::<f64>() / m) as f32
        })
        .collect()
}

/// The relative distance from arcee_fusion's threshold within which an importance may
/// fall on either side of it in mergekit. torch computes each row's KL divergence in
/// float32, where the terms for two nearly equal softmaxes largely cancel: on the
/// method fixtures a float32 KL differs from the f64 one by up to 3.5%, so importances
/// near the threshold are decided by rounding. amalgam computes the divergence in f64.
pub const FUSION_BAND: f32 = 5e-2;

/// Arcee Fusion: a change is kept where its importance reaches `median + 1.5 IQR` of
/// all importances.
fn arcee_fusion(b: &[f32], x: &[f32], cols: usize, seed: u64) -> Vec<f32> {
    let importance = fusion_importance(b, x, cols);
    let threshold = fusion_threshold(&importance, seed);
    b.iter()
        .zip(x)
        .zip(&importance)
        .map(|((b, x), i)| if *i >= threshold { b + (x - b) } else { *b })
        .collect()
}

/// Importance `|x - b| * KL(softmax(x) + 1e-8 || softmax(b) + 1e-8)`, the divergence
/// taken per row of `cols` elements.
fn fusion_importance(b: &[f32], x: &[f32], cols: usize) -> Vec<f32> {
    let cols = cols.max(1);
    let mut importance = vec![0f32; b.len()];
    for start in (0..b.len()).step_by(cols) {
        let end = (start + cols).min(b.len());
        let (p, q) = (softmax(&x[start..end]), softmax(&b[start..end]));
        let kl: f64 =
            p.iter().zip(&q).map(|(p, q)| (p + 1e-8) * ((p + 1e-8) / (q + 1e-8)).ln()).sum();
        for e in start..end {
            importance[e] = (f64::from((x[e] - b[e]).abs()) * kl) as f32;
        }
    }
    importance
}

/// `median + 1.5 IQR`, the quantiles read at `floor(q (n - 1))` of the sorted
/// importances, from a seeded sample of 10^6 (with replacement) for larger tensors.
fn fusion_threshold(importance: &[f32], seed: u64) -> f32 {
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
        return 0.0;
    }
    sample.sort_by(f32::total_cmp);
    let at = |q: f64| sample[(q * (sample.len() - 1) as f64) as usize];
    at(0.5) + 1.5 * (at(0.75) - at(0.25))
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
fn nuslerp(t: f32, v0: &[f32], v1: &[f32], vectors: Vectors) -> Vec<f32> {
    let len = v0.len();
    let (count, size) = vectors.shape(len);
    let index = |k: usize, j: usize| vectors.index(k, j);
    let t = f64::from(t);
    let mut out = vec![0f32; len];
    for k in 0..count {
        let get = |v: &[f32], j: usize| f64::from(v[index(k, j)]);
        let n0 = (0..size).map(|j| get(v0, j).powi(2)).sum::<f64>().sqrt().max(1e-7);
        let n1 = (0..size).map(|j| get(v1, j).powi(2)).sum::<f64>().sqrt().max(1e-7);
        let cos =
            ((0..size).map(|j| get(v0, j) / n0 * get(v1, j) / n1).sum::<f64>()).clamp(-1.0, 1.0);
        let collinear = 1.0 - cos * cos <= 1e-16;
        let theta = if collinear { 0.0 } else { cos.acos() };
        let (a, b) = if collinear {
            (1.0 - t, t)
        } else {
            (((1.0 - t) * theta).sin() / theta.sin(), (t * theta).sin() / theta.sin())
        };
        for j in 0..size {
            out[index(k, j)] = (a * get(v0, j) + b * get(v1, j)) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_stock_of_identical_offsets_is_the_average() {
        // Collinear offsets: cos = 1, t = N / (1 + N - 1) = 1, so the output is the mean.
        let base = vec![1.0, 1.0];
        let a = vec![2.0, 3.0];
        let b = vec![3.0, 5.0];
        let out = model_stock(&[base, a, b], 0, 2);
        assert!((out[0] - 2.5).abs() < 1e-6 && (out[1] - 4.0).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn sce_by_hand() {
        let inputs = [vec![0.0; 4], vec![1.0, -1.0, 2.0, 0.0], vec![3.0, 1.0, -1.0, 0.0]];
        // Weights mean(tau^2): 1.5 and 2.75, normalised. Element 0: both positive, weighted
        // mean; 1: sum 0 counts as positive, so only +1; 2: sum 1, only +2; 3: nothing.
        let (c1, c2) = (1.5 / 4.25, 2.75 / 4.25);
        let expected = [(c1 + 3.0 * c2) / (c1 + c2), 1.0, 2.0, 0.0];
        let out = sce(&inputs, 0, 1.0, |_| true);
        assert!(out.iter().zip(expected).all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6), "{out:?}");
        // select_topk 0.5 of 3 non-zero variances keeps one position: element 2 (2.25).
        assert_eq!(sce(&inputs, 0, 0.5, |_| true), [0.0, 0.0, 2.0, 0.0]);
        assert_eq!(sce(&inputs[..1], 0, 0.5, |_| true), [0.0; 4], "no task vectors");
    }

    #[test]
    fn arcee_fusion_keeps_only_the_outlier_change() {
        // One row: importance is |change| times the row's KL divergence, so the
        // threshold is median + 1.5 IQR of the changes: 0.4 + 1.5 * (0.6 - 0.2) = 1.0.
        let b = vec![0.0f32; 8];
        let x = vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 5.0];
        let out = arcee_fusion(&b, &x, 8, 0);
        assert_eq!(out, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0]);
        assert_eq!(arcee_fusion(&b, &b, 8, 0), b, "no change, nothing kept");
    }

    #[test]
    fn karcher_of_equal_norm_orthogonal_vectors_bisects() {
        let out = karcher(&[vec![1.0, 0.0], vec![0.0, 1.0]], 20, 1e-7);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((out[0] - h).abs() < 1e-5 && (out[1] - h).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn nuslerp_rows_and_columns() {
        // [[1, 0], [1, 0]] toward [[0, 1], [1, 0]] at t = 0.5.
        let (v0, v1) = (vec![1.0, 0.0, 1.0, 0.0], vec![0.0, 1.0, 1.0, 0.0]);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let rows = nuslerp(0.5, &v0, &v1, Vectors::Rows(2));
        let expected = [h, h, 1.0, 0.0];
        assert!(rows.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{rows:?}");
        // Column 0 is [1, 1] toward [0, 1], 45 degrees apart.
        let columns = nuslerp(0.5, &v0, &v1, Vectors::Columns(2));
        let a = ((std::f64::consts::PI / 8.0).sin() / (std::f64::consts::PI / 4.0).sin()) as f32;
        assert!(
            (columns[0] - a).abs() < 1e-6 && (columns[2] - 2.0 * a).abs() < 1e-6,
            "{columns:?}"
        );
    }
}
