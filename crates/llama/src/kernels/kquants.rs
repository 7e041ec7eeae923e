//! Scalar dot products of the K-quant super-blocks (Q2_K…Q6_K) with Q8_K activations.
//! Per super-block: the quants unpacked to unsigned levels, eight exact integer lane sums
//! (lane `l` of each 32-element chunk takes elements `4l..4l + 4`) weighted by the group
//! scales — the levels' offset (Q3_K: 4, Q6_K: 32) taken back through the activations'
//! `bsums` into lane 0 — then `fma(d, lanes, acc)` per float lane, the mins term summed
//! apart, and the lanes folded at the end. The AVX2 kernels do the same operations.

use amalgam_gguf::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, f16, q3k_scales, scale_min_k4,
};
use amalgam_gguf::ggml_type::QK_K;

use super::legacy::lanes_dot;

/// The activation block's scale.
#[inline(always)]
pub fn q8k_d(y: &BlockQ8K) -> f32 {
    f32::from_le_bytes(y.d)
}

/// `bsums[j]`, the sum of activations `16j..16j + 16`.
#[inline(always)]
pub fn bsum(y: &BlockQ8K, j: usize) -> i32 {
    i32::from(i16::from_le_bytes(y.bsums[j]))
}

/// The lane sums of chunk `c` (32 elements) of unsigned levels times activations.
#[inline(always)]
fn chunk_lanes(u: &[u8; QK_K], y: &BlockQ8K, c: usize) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for i in 0..32 {
        lanes[i / 4] += i32::from(u[32 * c + i]) * i32::from(y.qs[32 * c + i]);
    }
    lanes
}

/// Σ over chunks of lanes weighted by one scale per 32 elements.
#[inline(always)]
fn lanes_by_32(u: &[u8; QK_K], y: &BlockQ8K, scales: &[i32; 8]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (c, &s) in scales.iter().enumerate() {
        for (o, l) in lanes.iter_mut().zip(chunk_lanes(u, y, c)) {
            *o += s * l;
        }
    }
    lanes
}

/// Σ over chunks of lanes weighted by one scale per 16 elements (lanes 0–3 take the
/// first group of a chunk, lanes 4–7 the second), less `offset · Σ scale · bsum` in lane 0.
#[inline(always)]
fn lanes_by_16(u: &[u8; QK_K], y: &BlockQ8K, scales: &[i32; 16], offset: i32) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for c in 0..8 {
        for (l, v) in chunk_lanes(u, y, c).into_iter().enumerate() {
            lanes[l] += scales[2 * c + l / 4] * v;
        }
    }
    let correction: i32 = (0..16).map(|g| scales[g] * bsum(y, g)).sum();
    lanes[0] -= offset * correction;
    lanes
}

/// 2-bit levels packed as Q2_K/Q3_K pack them: `qs[32h + l]` holds elements
/// `128h + 32k + l` at bits `2k`.
#[inline(always)]
pub fn unpack_2bit(qs: &[u8; 64]) -> [u8; QK_K] {
    let mut u = [0u8; QK_K];
    for (e, v) in u.iter_mut().enumerate() {
        let (h, r) = (e / 128, e % 128);
        *v = (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
    }
    u
}

/// Q3_K levels plus 4: the 2-bit part with bit 2 set where `hmask` has the bit.
pub fn unpack_q3k(x: &BlockQ3K) -> [u8; QK_K] {
    let mut u = unpack_2bit(&x.qs);
    for (e, v) in u.iter_mut().enumerate() {
        *v |= ((x.hmask[e % 32] >> (e / 32)) & 1) << 2;
    }
    u
}

/// Q4_K/Q5_K low nibbles: `qs[32c + i]` holds element `64c + i` (low) and `64c + 32 + i`.
#[inline(always)]
pub fn unpack_4bit(qs: &[u8; 128]) -> [u8; QK_K] {
    let mut u = [0u8; QK_K];
    for (e, v) in u.iter_mut().enumerate() {
        let (c, i) = (e / 64, e % 64);
        let b = qs[32 * c + i % 32];
        *v = if i < 32 { b & 0x0F } else { b >> 4 };
    }
    u
}

pub fn unpack_q5k(x: &BlockQ5K) -> [u8; QK_K] {
    let mut u = unpack_4bit(&x.qs);
    for (e, v) in u.iter_mut().enumerate() {
        let (c, i) = (e / 64, e % 64);
        let bit = 2 * c + usize::from(i >= 32);
        *v |= ((x.qh[i % 32] >> bit) & 1) << 4;
    }
    u
}

/// Q6_K levels plus 32.
pub fn unpack_q6k(x: &BlockQ6K) -> [u8; QK_K] {
    let mut u = [0u8; QK_K];
    for (e, v) in u.iter_mut().enumerate() {
        let (h, r) = (e / 128, e % 128);
        let (k, i) = (r / 32, r % 32);
        let low = (x.ql[64 * h + i + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0F;
        let high = (x.qh[32 * h + i] >> (2 * k)) & 3;
        *v = low | (high << 4);
    }
    u
}

/// Q4_K/Q5_K scales and mins, one per 32 elements.
#[inline(always)]
pub fn k4_scales(packed: &[u8; 12]) -> ([i32; 8], [i32; 8]) {
    let (mut scales, mut mins) = ([0i32; 8], [0i32; 8]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, packed);
        (scales[j], mins[j]) = (i32::from(sc), i32::from(m));
    }
    (scales, mins)
}

/// The Q4_K/Q5_K mins term `Σ m_j · (bsum_2j + bsum_2j+1)`.
#[inline(always)]
pub fn k4_mins(mins: &[i32; 8], y: &BlockQ8K) -> i32 {
    (0..8).map(|j| mins[j] * (bsum(y, 2 * j) + bsum(y, 2 * j + 1))).sum()
}

/// Q2_K scales (low nibbles) and mins (high nibbles), one per 16 elements.
#[inline(always)]
pub fn q2k_scales(x: &BlockQ2K) -> ([i32; 16], [i32; 16]) {
    (x.scales.map(|s| i32::from(s & 0x0F)), x.scales.map(|s| i32::from(s >> 4)))
}

/// The Q2_K mins term `Σ m_j · bsum_j`.
#[inline(always)]
pub fn q2k_mins(mins: &[i32; 16], y: &BlockQ8K) -> i32 {
    (0..16).map(|j| mins[j] * bsum(y, j)).sum()
}

/// Signed 16-element scales as i32.
#[inline(always)]
pub fn widen(scales: [i8; 16]) -> [i32; 16] {
    scales.map(i32::from)
}

/// Runs `block` over the super-blocks: `fold8(lanes) − Σ mins`.
#[inline(always)]
fn dot<W: amalgam_gguf::blocks::Block>(
    w: &[u8],
    a: &[u8],
    block: impl Fn(&W, &BlockQ8K) -> (f32, [i32; 8], f32),
) -> f32 {
    lanes_dot(w, a, -1.0, block)
}

fn one_q2_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ2K, y| {
        let (scales, mins) = q2k_scales(x);
        let lanes = lanes_by_16(&unpack_2bit(&x.qs), y, &scales, 0);
        (q8k_d(y) * f16(x.d), lanes, (q8k_d(y) * f16(x.dmin)) * q2k_mins(&mins, y) as f32)
    })
}

fn one_q3_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ3K, y| {
        let lanes = lanes_by_16(&unpack_q3k(x), y, &widen(q3k_scales(&x.scales)), 4);
        (f16(x.d) * q8k_d(y), lanes, 0.0)
    })
}

fn one_q4_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ4K, y| {
        let (scales, mins) = k4_scales(&x.scales);
        let lanes = lanes_by_32(&unpack_4bit(&x.qs), y, &scales);
        (q8k_d(y) * f16(x.d), lanes, (q8k_d(y) * f16(x.dmin)) * k4_mins(&mins, y) as f32)
    })
}

fn one_q5_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ5K, y| {
        let (scales, mins) = k4_scales(&x.scales);
        let lanes = lanes_by_32(&unpack_q5k(x), y, &scales);
        (q8k_d(y) * f16(x.d), lanes, (q8k_d(y) * f16(x.dmin)) * k4_mins(&mins, y) as f32)
    })
}

fn one_q6_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ6K, y| {
        let lanes = lanes_by_16(&unpack_q6k(x), y, &widen(x.scales), 32);
        (f16(x.d) * q8k_d(y), lanes, 0.0)
    })
}

super::row_dots! {
    dot_q2_k => one_q2_k;
    dot_q3_k => one_q3_k;
    dot_q4_k => one_q4_k;
    dot_q5_k => one_q5_k;
    dot_q6_k => one_q6_k;
}

super::per_token_panel! {
    panel_q2_k => one_q2_k;
    panel_q3_k => one_q3_k;
    panel_q4_k => one_q4_k;
    panel_q5_k => one_q5_k;
    panel_q6_k => one_q6_k;
}
