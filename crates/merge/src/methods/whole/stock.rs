//! Model Stock: the base moved towards the fine-tunes' average by a ratio from their mean
//! pairwise cosine, in mergekit's order of operations.

use super::*;

/// Model Stock over rows of `row` elements (the whole tensor as one row unless
/// filter-wise), in mergekit's order of operations.
#[inline(always)]
pub(super) fn model_stock(inputs: &[Vec<f32>], base: usize, row: usize, w: impl Torch) -> Vec<f32> {
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
