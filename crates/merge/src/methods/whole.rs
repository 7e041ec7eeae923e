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
}
