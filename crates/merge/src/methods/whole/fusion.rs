//! Arcee Fusion: keep a fine-tune's change where its importance (|change| times its row's
//! KL divergence) is an upper outlier, and find where that outcome hangs on rounding.

use super::*;

/// The relative distance from arcee_fusion's threshold within which a float32
/// importance may fall on either side of it in mergekit. torch sums each row's KL divergence in its own
/// order, where the terms for two nearly equal softmaxes largely cancel, so importances
/// near the threshold are decided by rounding.
pub const FUSION_BAND: f32 = 5e-2;

/// Arcee Fusion: a change is kept where its importance reaches `median + 1.5 IQR` of
/// all importances.
pub(super) fn arcee_fusion(
    b: &[f32],
    x: &[f32],
    cols: usize,
    seed: u64,
    w: impl Torch,
) -> Vec<f32> {
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
pub(super) fn fusion_importance(b: &[f32], x: &[f32], cols: usize, w: impl Torch) -> Vec<f32> {
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
pub(super) fn shifted_softmax(exact: &[f64], w: impl Torch) -> Vec<f32> {
    let eps = w.scalar(1e-8);
    exact.iter().map(|p| w.r(w.r(*p as f32) + eps)).collect()
}

/// One row's KL divergence of the shifted softmaxes, `sum(p * log(p / q))`.
pub(super) fn row_kl(p: &[f32], q: &[f32], w: impl Torch) -> f32 {
    w.sum(p.iter().zip(q).map(|(p, q)| w.r(p * w.r(w.r(p / q).ln()))))
}

/// `median + 1.5 IQR` of the importances (see [`fusion_quartiles`]).
pub(super) fn fusion_threshold(importance: &[f32], seed: u64, w: impl Torch) -> f32 {
    let [q1, median, q3] = fusion_quartiles(importance, seed);
    w.r(median + w.r(1.5 * w.r(q3 - q1)))
}

/// The first quartile, median and third quartile, read at `floor(q (n - 1))` of the
/// sorted importances, from a seeded sample of 10^6 (with replacement) for larger
/// tensors.
pub(super) fn fusion_quartiles(importance: &[f32], seed: u64) -> [f32; 3] {
    const SAMPLE: usize = 1_000_000;
    let mut sample: Vec<f32> = if importance.len() > SAMPLE {
        let mut rng = crate::methods::gta::SplitMix64(seed);
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
pub(super) fn softmax(v: &[f32]) -> Vec<f64> {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    let exp: Vec<f64> = v.iter().map(|x| f64::from(x - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}
