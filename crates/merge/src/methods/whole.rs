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
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

impl Whole {
    /// Merges whole tensors (`cols` elements per row); the result is in f32.
    pub fn merge(&self, inputs: &[Vec<f32>], cols: usize) -> Vec<f32> {
        match *self {
            Whole::ModelStock { base, filter_wise } => {
                model_stock(inputs, base, if filter_wise { cols } else { inputs[0].len() })
            }
            Whole::Karcher { max_iter, tol } => karcher(inputs, max_iter, tol),
            Whole::Gta(ref gta) => gta.merge(inputs, cols),
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
