//! Where a whole-tensor method's result hangs on a tie-break or on rounding: what the
//! integration tests excuse, and replay, when they compare with mergekit (built for tests
//! and the `test-support` feature only).

use super::fusion::{
    fusion_importance, fusion_quartiles, fusion_threshold, row_kl, shifted_softmax, softmax,
};
use super::sce::{sce_cut, variances};
use super::*;

impl Whole {
    /// Positions where the result depends on how a sort orders equal values (see
    /// [`super::gta::Gta::tied_positions`]); `None` for methods without such a cut.
    /// For arcee_fusion in float32, positions whose importance lies within
    /// [`FUSION_BAND`] of the threshold, where float summation order decides the
    /// outcome; in a reduced dtype, those whose row's divergence hangs on how a softmax
    /// value at a rounding midpoint is rounded. For tests (the `test-support` feature).
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

    /// SCE with the tie at its selection cut broken by `keep_tied` (called for each
    /// position whose variance equals the cut) instead of by position; `None` for other
    /// methods. Tests use it to replay another implementation's tie-break (the
    /// `test-support` feature).
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
