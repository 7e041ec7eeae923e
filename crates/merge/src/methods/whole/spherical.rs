//! Interpolation on the hypersphere: the Karcher mean, barycentric multi-SLERP and
//! NuSLERP along flattened tensors, rows or columns.

use super::*;
use std::borrow::Cow;

use crate::methods::reduce::Norm2;
use crate::methods::torch::{WideDot, WideSum, wide_sum_zip};

/// The weighted Karcher mean with equal weights, as mergekit computes it: norms in
/// float32, unit vectors of inputs with norm above `tol`, a normalised weighted mean as
/// the start, then Riemannian gradient steps until the tangent is below `tol`. Each
/// iteration is three passes over the vectors — the mean's dots with the units (dividing
/// the mean by its last norm on the way), the tangent and its norm, the step and the new
/// norm — in mergekit's per-element order.
#[inline(always)]
pub(super) fn karcher(inputs: &[Vec<f32>], max_iter: usize, tol: f32, w: impl Torch) -> Vec<f32> {
    let len = inputs[0].len();
    if inputs.len() == 1 {
        return inputs[0].clone();
    }
    let tol = f64::from(tol);
    let alpha = 1.0 / inputs.len() as f64;
    let mut norms = Vec::with_capacity(inputs.len());
    for x in inputs {
        norms.push(reduce::norm2(x));
    }
    let valid: Vec<usize> = (0..inputs.len()).filter(|&i| f64::from(norms[i]) > tol).collect();
    if valid.is_empty() {
        return vec![0.0; len];
    }
    let mut units = Vec::with_capacity(valid.len());
    for &i in &valid {
        let (mut unit, n) = (buffers::take(len), norms[i]);
        for (u, x) in unit.iter_mut().zip(&inputs[i]) {
            *u = w.r(x / n);
        }
        units.push(unit);
    }
    let alpha_sum: f64 = valid.iter().map(|_| alpha).sum();
    let alphas: Vec<f32> = valid.iter().map(|_| (alpha / alpha_sum) as f32).collect();
    // The weighted mean of the units, and its norm.
    let mut mean = buffers::take(len);
    let mut mean_norm = Norm2::default();
    for (b, block) in mean.chunks_mut(BLOCK).enumerate() {
        let range = b * BLOCK..b * BLOCK + block.len();
        block.fill(0.0);
        for (a, u) in alphas.iter().zip(&units) {
            for (m, x) in block.iter_mut().zip(&u[range.clone()]) {
                *m = w.r(*m + w.r(x * a));
            }
        }
        mean_norm.feed(block);
    }
    let mean_norm = mean_norm.finish();
    // The norm the mean is still to be divided by: each division waits for the next pass.
    let mut pending = None;
    if f64::from(mean_norm) < tol {
        mean.copy_from_slice(&units[0]);
    } else {
        pending = Some(mean_norm);
    }
    let mut tangent = buffers::take(len);
    for _ in 0..max_iter {
        let mut dots = vec![WideDot::default(); units.len()];
        for (b, block) in mean.chunks_mut(BLOCK).enumerate() {
            if let Some(n) = pending {
                block.iter_mut().for_each(|m| *m = w.r(*m / n));
            }
            let range = b * BLOCK..b * BLOCK + block.len();
            for (dot, u) in dots.iter_mut().zip(&units) {
                dot.add(block, &u[range.clone()]);
            }
        }
        pending = None;
        // Each unit's (dot, step), or none where it is already at the mean.
        let steps: Vec<Option<(f32, f32)>> = dots
            .iter()
            .zip(&alphas)
            .map(|(dot, a)| {
                let dot = w.r(dot.total() as f32).clamp(-1.0, 1.0);
                let theta = w.r(dot.acos());
                let step = w.r(w.r(theta / w.r(theta.sin())) * a);
                (f64::from(theta) >= tol).then_some((dot, step))
            })
            .collect();
        let mut tangent_norm = Norm2::default();
        for (b, block) in tangent.chunks_mut(BLOCK).enumerate() {
            let range = b * BLOCK..b * BLOCK + block.len();
            block.fill(0.0);
            for (step, u) in steps.iter().zip(&units) {
                let Some((dot, step)) = *step else { continue };
                let terms = block.iter_mut().zip(&mean[range.clone()]).zip(&u[range.clone()]);
                for ((t, m), x) in terms {
                    *t = w.r(*t + w.r(step * w.r(x - w.r(dot * m))));
                }
            }
            tangent_norm.feed(block);
        }
        let tangent_norm = tangent_norm.finish();
        if f64::from(tangent_norm) < tol {
            break;
        }
        // cos and sin are float32 0-dim tensors multiplied from the left: rounded first.
        let (c, s) = (w.r(tangent_norm.cos()), w.r(tangent_norm.sin()));
        let mut unit_norm = Norm2::default();
        for (b, block) in mean.chunks_mut(BLOCK).enumerate() {
            let range = b * BLOCK..b * BLOCK + block.len();
            for (m, t) in block.iter_mut().zip(&tangent[range]) {
                *m = w.r(w.r(c * *m) + w.r(s * w.r(t / tangent_norm)));
            }
            unit_norm.feed(block);
        }
        let unit_norm = unit_norm.finish();
        if f64::from(unit_norm) > tol {
            pending = Some(unit_norm);
        }
    }
    let scale = w.r(norms.iter().fold(0f32, |s, n| s + alpha as f32 * n));
    let mut out = tangent;
    for (o, m) in out.iter_mut().zip(&mean) {
        let m = pending.map_or(*m, |n| w.r(m / n));
        *o = w.r(scale * m);
    }
    buffers::recycle(units.into_iter().chain([mean]));
    out
}

/// mergekit's multislerp: unit vectors of the flattened inputs, their weighted mean
/// normalised, the weighted tangent there, the exponential map back, scaled by the
/// weighted mean norm. A lone input is returned as it is, without the base. Unit vectors
/// are recomputed where used rather than stored: a division costs less than the memory.
#[inline(always)]
pub(super) fn multislerp(
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
    let xs: Vec<Cow<'_, [f32]>> = others
        .iter()
        .map(|&i| match base {
            Some(b) => Cow::Owned(w.sub(&inputs[i], &inputs[b])),
            None => Cow::Borrowed(&inputs[i][..]),
        })
        .collect();
    let mut weights: Vec<f32> = weights.iter().map(|v| w.r(*v)).collect();
    if normalize {
        let total = w.sum(weights.iter().copied());
        weights.iter_mut().for_each(|v| *v = w.r(*v / total));
    }
    let eps_r = w.scalar(f64::from(eps));
    let len = xs[0].len();
    // Loops, not iterator closures, over the long vectors: a closure is compiled on its
    // own, without the AVX2 of the function it is written in, unless it is inlined.
    let mut norms = Vec::with_capacity(xs.len());
    for x in &xs {
        norms.push(w.norm(x));
    }
    let divisors: Vec<f32> = norms.iter().map(|n| w.r(n + eps_r)).collect();
    let add_base = |mut out: Vec<f32>| {
        if let Some(b) = base {
            out.iter_mut().zip(&inputs[b]).for_each(|(o, x)| *o = w.r(*o + x));
        }
        out
    };
    // The weighted mean of the unit vectors, and its norm as it is written.
    let mut mean = buffers::take(len);
    let mut mean_norm = Norm2::default();
    sum_over_models(
        &mut mean,
        xs.len(),
        w,
        &mut mean_norm,
        #[inline(always)]
        |i, range, terms| {
            let (d, c) = (divisors[i], weights[i]);
            terms.iter_mut().zip(&xs[i][range]).for_each(|(t, x)| *t = w.r(w.r(x / d) * c));
        },
    );
    let mean_norm = w.r(mean_norm.finish());
    if f64::from(mean_norm) < f64::from(eps) {
        // Antipodal inputs: the weighted sum (mergekit raises for more than two).
        sum_over_models(
            &mut mean,
            xs.len(),
            w,
            &mut Norm2::default(),
            #[inline(always)]
            |i, range, terms| {
                let c = weights[i];
                terms.iter_mut().zip(&xs[i][range]).for_each(|(t, x)| *t = w.r(x * c));
            },
        );
        return add_base(mean);
    }
    // The mean normalised, and each unit vector's dot with it, in one pass.
    let mut dots = vec![WideSum::default(); xs.len()];
    for (b, block) in mean.chunks_mut(BLOCK).enumerate() {
        block.iter_mut().for_each(|m| *m = w.r(*m / mean_norm));
        let range = b * BLOCK..b * BLOCK + block.len();
        for ((dot, x), &d) in dots.iter_mut().zip(&xs).zip(&divisors) {
            dot.add_zip(
                &x[range.clone()],
                block,
                #[inline(always)]
                |x, m| w.r(w.r(x / d) * m),
            );
        }
    }
    let dots: Vec<f32> = dots.iter().map(|d| w.r(d.total() as f32)).collect();
    // Each unit vector's tangent at the mean, weighted and summed over the inputs.
    let mut tangent = buffers::take(len);
    let mut tangent_norm = Norm2::default();
    sum_over_models(
        &mut tangent,
        xs.len(),
        w,
        &mut tangent_norm,
        #[inline(always)]
        |i, range, terms| {
            let (d, dot, c) = (divisors[i], dots[i], weights[i]);
            let pairs = xs[i][range.clone()].iter().zip(&mean[range]);
            for (t, (x, m)) in terms.iter_mut().zip(pairs) {
                *t = w.r(w.r(w.r(x / d) - w.r(dot * m)) * c);
            }
        },
    );
    let tangent_norm = w.r(w.r(tangent_norm.finish()) + eps_r);
    let c = w.r(tangent_norm.cos());
    let s = w.r(w.r(tangent_norm.sin()) / tangent_norm);
    let avg_norm = w.sum(norms.iter().zip(&weights).map(|(n, c)| w.r(n * c)));
    for (t, m) in tangent.iter_mut().zip(&mean) {
        *t = w.r(w.r(w.r(m * c) + w.r(*t * s)) * avg_norm);
    }
    buffers::recycle([mean]);
    add_base(tangent)
}

/// Elements per block of the fused passes: a whole number of lanes, small enough that a
/// block's inputs stay in the first-level cache.
const BLOCK: usize = 256;

/// `out[e]` = the sum over `models` of each model's term for element `e`, added in f64 in
/// model order and rounded once, as [`Torch::sum`] adds them; `norm` is fed `out` as it
/// is written. `terms(i, range, buffer)` fills `buffer` with model `i`'s terms for the
/// elements in `range`; working a block at a time keeps each model's terms a plain loop
/// the compiler vectorizes.
#[inline(always)]
fn sum_over_models(
    out: &mut [f32],
    models: usize,
    w: impl Torch,
    norm: &mut Norm2,
    terms: impl Fn(usize, std::ops::Range<usize>, &mut [f32]),
) {
    // The neutral element `f64: Sum` starts from, so the bits are Torch::sum's.
    let zero: f64 = std::iter::empty::<f64>().sum();
    let mut buffer = [0f32; BLOCK];
    for (b, out) in out.chunks_mut(BLOCK).enumerate() {
        let range = b * BLOCK..b * BLOCK + out.len();
        let mut acc = [zero; BLOCK];
        for i in 0..models {
            let buffer = &mut buffer[..out.len()];
            terms(i, range.clone(), buffer);
            acc.iter_mut().zip(buffer.iter()).for_each(|(a, t)| *a += f64::from(*t));
        }
        out.iter_mut().zip(acc).for_each(|(o, a)| *o = w.r(a as f32));
        norm.feed(out);
    }
}

/// How nuslerp groups elements into vectors.
#[derive(Clone, Copy)]
pub(super) enum Vectors {
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
pub(super) fn nuslerp(t: f64, v0: &[f32], v1: &[f32], vectors: Vectors, w: impl Torch) -> Vec<f32> {
    let len = v0.len();
    let (count, size) = vectors.shape(len);
    let mut out = buffers::take(len);
    // Elements past the last whole vector (rows of a ragged length) stay zero.
    out[(count * size).min(len)..].fill(0.0);
    if size == 0 {
        return out;
    }
    if let Vectors::Columns(_) = vectors {
        let mut result = vec![0f32; size];
        for k in 0..count {
            let gather =
                |v: &[f32]| -> Vec<f32> { (0..size).map(|j| v[vectors.index(k, j)]).collect() };
            slerp_vector(t, &gather(v0), &gather(v1), true, &mut result, w);
            for (j, r) in result.iter().enumerate() {
                out[vectors.index(k, j)] = *r;
            }
        }
        return out;
    }
    // Whole tensors and rows are contiguous: each vector is a slice of the inputs.
    let pairs = v0.chunks_exact(size).zip(v1.chunks_exact(size));
    for ((x0, x1), o) in pairs.zip(out.chunks_exact_mut(size)) {
        slerp_vector(t, x0, x1, false, o, w);
    }
    out
}

/// nuslerp of one pair of vectors into `out` (`strided`: the vectors are columns, whose
/// norms torch sums in another order).
#[inline(always)]
fn slerp_vector(t: f64, x0: &[f32], x1: &[f32], strided: bool, out: &mut [f32], w: impl Torch) {
    let floor = w.scalar(1e-7);
    // Python floats multiply tensors at float32.
    let (t32, rest) = (t as f32, (1.0 - t) as f32);
    let norm = |x: &[f32]| if strided { w.norm_strided(x) } else { w.norm(x) }.max(floor);
    let (n0, n1) = (norm(x0), norm(x1));
    // `(x0 / n0 * (x1 / n1)).sum()`, each quotient and product rounded.
    let products = wide_sum_zip(x0, x1, |a, b| w.r(w.r(a / n0) * w.r(b / n1)));
    let cos = w.r(products as f32).clamp(-1.0, 1.0);
    let collinear = w.r(1.0 - w.r(cos * cos)) <= 1e-16;
    let pairs = x0.iter().zip(x1).zip(out);
    if collinear {
        pairs.for_each(|((a, b), o)| *o = w.r(w.r(rest * a) + w.r(t32 * b)));
    } else {
        let theta = w.r(cos.acos());
        let sin_theta = w.r(theta.sin());
        let (a, b) = (w.r(w.r(theta * rest).sin()), w.r(w.r(theta * t32).sin()));
        pairs.for_each(|((p, q), o)| *o = w.r(w.r(w.r(a * p) + w.r(b * q)) / sin_theta));
    }
}
