//! The elementwise and row operations of the forward pass, in f32: RMSNorm (sum of
//! squares in f64, as llama.cpp), the SiLU-gated product, residual adds.

/// `y = x / sqrt(mean(x²) + eps) · w` for one row.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len().max(1) as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in y.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * w;
    }
}

/// [`rms_norm`] over every `w.len()`-wide row of `x`.
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    rms_norm_rows_into(x, w, eps, &mut y);
    y
}

/// [`rms_norm_rows`] into `y` (as long as `x`).
pub fn rms_norm_rows_into(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    for (o, r) in y.chunks_exact_mut(w.len()).zip(x.chunks_exact(w.len())) {
        rms_norm(r, w, eps, o);
    }
}

/// [`rms_norm`] in place over every `w.len()`-wide piece of `x` (per-head norms).
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let mut tmp = vec![0f32; w.len()];
    for r in x.chunks_exact_mut(w.len()) {
        rms_norm(r, w, eps, &mut tmp);
        r.copy_from_slice(&tmp);
    }
}

/// `gate ← silu(gate) · up`, `silu(g) = g / (1 + e^−g)`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// `x *= factor`; nothing to do (and no rounding) for a factor of 1.
pub fn scale(x: &mut [f32], factor: f32) {
    if factor != 1.0 {
        x.iter_mut().for_each(|v| *v *= factor);
    }
}

/// Adds `bias` to every `bias.len()`-wide row of `x`.
pub fn add_rows(x: &mut [f32], bias: &[f32]) {
    for r in x.chunks_exact_mut(bias.len()) {
        add(r, bias);
    }
}

/// Rounds every value to f16 precision (nearest even).
pub fn round_f16(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
}
