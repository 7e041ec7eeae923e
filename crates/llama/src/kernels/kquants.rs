//! Scalar dot products of the K-quant super-blocks (Q2_K…Q6_K) with Q8_K activations.
//! Per super-block: one exact integer `Σ_g scale_g · Σ_{e∈g} level_e · q_e` (the levels'
//! offset — Q3_K: 4, Q6_K: 32 — taken back through the activations' `bsums`), and for
//! Q2_K/Q4_K/Q5_K the exact mins term `Σ_g min_g · bsum_g`; then `acc = fma(d_y · d, sum,
//! acc)` and `acc = fma(−(d_y · dmin), mins, acc)`, one running f32 over the super-blocks.
//! Integer sums are the same in any order (they are exact, and wrap alike mod 2^32), so
//! every SIMD kernel — one token, a panel of tokens, or tokens in lanes — gives these bits.

use amalgam_gguf::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, f16, q3k_scales, scale_min_k4,
};
use amalgam_gguf::ggml_type::QK_K;

use super::legacy::pairs;

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

/// One super-block's product before its scales: `d_y · d` times `sum`, less `d_y · dmin`
/// times `mins` (both 0 for the types without mins).
pub struct SuperBlock {
    pub d: f32,
    pub sum: i32,
    pub dmin: f32,
    pub mins: i32,
}

/// One super-block's share of the running sum: `fma(d, sum, acc)`, then `fma(−dmin,
/// mins, acc)` (the second leaves `acc` as it is when both are 0, sign included).
#[inline(always)]
pub fn add_super_block(acc: f32, b: &SuperBlock) -> f32 {
    let acc = b.d.mul_add(b.sum as f32, acc);
    (-b.dmin).mul_add(b.mins as f32, acc)
}

/// Σ over groups of `G` elements: `scales[g] · Σ_{e∈g} u_e · q_e`, less `offset · Σ_g
/// scales[g] · (activation sum of g)`.
#[inline(always)]
fn weighted_levels<const N: usize>(
    u: &[u8; QK_K],
    y: &BlockQ8K,
    scales: &[i32; N],
    offset: i32,
) -> i32 {
    let per = QK_K / N;
    let mut sum = 0i32;
    for (g, &s) in scales.iter().enumerate() {
        let group = (g * per..(g + 1) * per)
            .map(|e| i32::from(u[e]) * i32::from(y.qs[e]))
            .fold(0i32, i32::wrapping_add);
        let act: i32 = (g * per / 16..(g + 1) * per / 16).map(|j| bsum(y, j)).sum();
        sum = sum.wrapping_add(s.wrapping_mul(group.wrapping_sub(offset * act)));
    }
    sum
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

/// Runs `block` over the super-blocks into one running sum ([`add_super_block`]).
#[inline(always)]
fn dot<W: amalgam_gguf::blocks::Block>(
    w: &[u8],
    a: &[u8],
    block: impl Fn(&W, &BlockQ8K) -> SuperBlock,
) -> f32 {
    pairs::<W, BlockQ8K>(w, a).fold(0.0, |acc, (x, y)| add_super_block(acc, &block(x, y)))
}

/// A super-block of a type with no mins term.
#[inline(always)]
fn plain(d: f32, sum: i32) -> SuperBlock {
    SuperBlock { d, sum, dmin: 0.0, mins: 0 }
}

fn one_q2_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ2K, y| {
        let (scales, mins) = q2k_scales(x);
        SuperBlock {
            d: q8k_d(y) * f16(x.d),
            sum: weighted_levels(&unpack_2bit(&x.qs), y, &scales, 0),
            dmin: q8k_d(y) * f16(x.dmin),
            mins: q2k_mins(&mins, y),
        }
    })
}

fn one_q3_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ3K, y| {
        let sum = weighted_levels(&unpack_q3k(x), y, &widen(q3k_scales(&x.scales)), 4);
        plain(f16(x.d) * q8k_d(y), sum)
    })
}

/// Q4_K and Q5_K from their unpacked levels.
#[inline(always)]
fn k4(u: &[u8; QK_K], packed: &[u8; 12], d: [u8; 2], dmin: [u8; 2], y: &BlockQ8K) -> SuperBlock {
    let (scales, mins) = k4_scales(packed);
    SuperBlock {
        d: q8k_d(y) * f16(d),
        sum: weighted_levels(u, y, &scales, 0),
        dmin: q8k_d(y) * f16(dmin),
        mins: k4_mins(&mins, y),
    }
}

fn one_q4_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ4K, y| k4(&unpack_4bit(&x.qs), &x.scales, x.d, x.dmin, y))
}

fn one_q5_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ5K, y| k4(&unpack_q5k(x), &x.scales, x.d, x.dmin, y))
}

fn one_q6_k(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ6K, y| {
        plain(f16(x.d) * q8k_d(y), weighted_levels(&unpack_q6k(x), y, &widen(x.scales), 32))
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
