//! Scalar dot products of f32, f16 and bf16 rows with f32 activations. The sum runs in 32
//! lanes (lane `i % 32` takes element `i`, by fused multiply-add) folded in a fixed tree,
//! the order the AVX2 kernels use, so both give the same bits.

/// Lanes of the running sum: four 8-wide vectors.
pub const LANES: usize = 32;

/// Folds the 32 lanes: vectors `(v0 + v1) + (v2 + v3)`, then [`fold8`].
#[inline(always)]
pub fn fold(acc: &[f32; LANES]) -> f32 {
    let mut v = [0f32; 8];
    for (l, o) in v.iter_mut().enumerate() {
        *o = (acc[l] + acc[8 + l]) + (acc[16 + l] + acc[24 + l]);
    }
    fold8(&v)
}

/// Folds 8 lanes as ggml's `hsum_float_8`: `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
#[inline(always)]
pub fn fold8(v: &[f32; 8]) -> f32 {
    ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
}

#[inline(always)]
fn dot_with(w: &[u8], x: &[f32], width: usize, decode: impl Fn(&[u8]) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    for (i, (b, &v)) in w.chunks_exact(width).zip(x).enumerate() {
        let lane = &mut acc[i % LANES];
        *lane = decode(b).mul_add(v, *lane);
    }
    fold(&acc)
}

pub fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    dot_with(w, x, 4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    dot_with(w, x, 2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
}

pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    dot_with(w, x, 2, |b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
}

/// The rows of `rows` a weighted sum of rows `width · n` bytes long, `stride` apart,
/// can read: at most `count`.
pub fn whole_rows(rows: usize, stride: usize, bytes: usize, count: usize) -> usize {
    match rows.checked_sub(bytes) {
        None => 0,
        Some(rest) => rest.checked_div(stride).map_or(count, |r| count.min(r + 1)),
    }
}

#[inline(always)]
fn weighted_with(
    weights: &[f32],
    rows: &[u8],
    stride: usize,
    out: &mut [f32],
    width: usize,
    decode: impl Fn(&[u8]) -> f32,
) {
    let bytes = out.len() * width;
    let count = whole_rows(rows.len(), stride, bytes, weights.len());
    for (j, &a) in weights[..count].iter().enumerate() {
        let row = &rows[j * stride..j * stride + bytes];
        for (o, b) in out.iter_mut().zip(row.chunks_exact(width)) {
            *o = a.mul_add(decode(b), *o);
        }
    }
}

pub fn weighted_f16(weights: &[f32], rows: &[u8], stride: usize, out: &mut [f32]) {
    let decode = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    weighted_with(weights, rows, stride, out, 2, decode);
}

pub fn weighted_f32(weights: &[f32], rows: &[u8], stride: usize, out: &mut [f32]) {
    let decode = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    weighted_with(weights, rows, stride, out, 4, decode);
}

/// [`super::WeightedSums`] by `one` per output.
pub fn one_at_a_time(
    one: super::WeightedSum,
    weights: &[&[f32]],
    rows: &[u8],
    stride: usize,
    outs: &mut [&mut [f32]],
) {
    for (w, o) in weights.iter().zip(outs) {
        one(w, rows, stride, o);
    }
}

pub fn weighted_many_f16(weights: &[&[f32]], rows: &[u8], stride: usize, outs: &mut [&mut [f32]]) {
    one_at_a_time(weighted_f16, weights, rows, stride, outs);
}

pub fn weighted_many_f32(weights: &[&[f32]], rows: &[u8], stride: usize, outs: &mut [&mut [f32]]) {
    one_at_a_time(weighted_f32, weights, rows, stride, outs);
}

/// Declares scalar float panel kernels that run the one-token kernel per row and token.
macro_rules! per_token_float_panel {
    ($($name:ident => $one:ident;)*) => {$(
        pub fn $name(
            rows: [&[u8]; super::FLOAT_ROWS],
            xs: &[&[f32]; super::FLOAT_TOKENS],
            out: &mut [[f32; super::FLOAT_TOKENS]; super::FLOAT_ROWS],
        ) {
            for (w, out) in rows.into_iter().zip(out) {
                for (o, x) in out.iter_mut().zip(xs) {
                    *o = $one(w, x);
                }
            }
        }
    )*};
}

per_token_float_panel! {
    panel_f32 => dot_f32;
    panel_f16 => dot_f16;
    panel_bf16 => dot_bf16;
}
