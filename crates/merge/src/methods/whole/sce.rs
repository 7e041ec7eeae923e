//! SCE: select the high-variance positions of the task vectors, weight the vectors by
//! their mean square and erase minority signs.

use super::*;

/// mergekit's SCE merge; `keep_tied` decides positions whose variance equals the cut
/// when the cut falls inside a group of equal variances (mergekit leaves that to
/// `torch.topk`; by default the earliest positions are kept).
pub(super) fn sce(
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
pub(super) fn sce_weights(tvs: &[Vec<f32>], w: impl Torch) -> Vec<f32> {
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
pub(super) struct Cut {
    /// How many positions are kept.
    pub(super) k: usize,
    /// The smallest kept variance.
    pub(super) value: f32,
    /// Whether positions left out share that variance.
    pub(super) tied: bool,
}

/// The cut keeping `density` of the positions with non-zero variance.
pub(super) fn sce_cut(var: &[f32], density: f32) -> Cut {
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
pub(super) fn sce_select(
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
pub(super) fn variances(tvs: &[Vec<f32>], w: impl Torch) -> Vec<f32> {
    let m = tvs.len() as f64;
    (0..tvs[0].len())
        .map(|e| {
            let mean = tvs.iter().map(|tv| f64::from(tv[e])).sum::<f64>() / m;
            w.r((tvs.iter().map(|tv| (f64::from(tv[e]) - mean).powi(2)).sum::<f64>() / m) as f32)
        })
        .collect()
}
