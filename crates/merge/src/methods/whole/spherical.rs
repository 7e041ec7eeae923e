//! Interpolation on the hypersphere: the Karcher mean, barycentric multi-SLERP and
//! NuSLERP along flattened tensors, rows or columns.

use super::*;

/// The weighted Karcher mean with equal weights, as mergekit computes it: norms in
/// float32, unit vectors of inputs with norm above `tol`, a normalised weighted mean as
/// the start, then Riemannian gradient steps until the tangent is below `tol`.
#[inline(always)]
pub(super) fn karcher(inputs: &[Vec<f32>], max_iter: usize, tol: f32, w: impl Torch) -> Vec<f32> {
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
