//! AVX2 dot products of the K-quant super-blocks with Q8_K activations: each
//! super-block's levels are unpacked (32 per register) with its scales (the panels in
//! `avx2_k_panel` unpack them the same way, once for a tile of tokens); `maddubs` with the
//! activations and `madd` with the group scales give eight integer lanes, summed to the
//! super-block's exact integer and finished as the scalar kernels finish it.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, as_blocks, q3k_scales,
};

use super::ActRow;
use super::avx2::{PREFETCH_AHEAD, checked_quant, f16, load32};
use super::kquants::{
    SuperBlock, add_super_block, bsum, k4_mins, k4_scales, q2k_mins, q2k_scales, q8k_d, widen,
};

checked_quant! {
    dot_q2_k => q2_k_body;
    dot_q3_k => q3_k_body;
    dot_q4_k => q4_k_body;
    dot_q5_k => q5_k_body;
    dot_q6_k => q6_k_body;
}

/// A super-block decoded once for every token: its eight 32-level chunks and their
/// scale vectors (one i16 per element pair), the scales and mins as integers, and the
/// block's scales.
pub(super) struct Decoded<const M: usize> {
    pub levels: [__m256i; 8],
    pub scales: [__m256i; 8],
    /// Per-group scales (for offset corrections) or mins (for the mins term).
    pub ints: [i32; M],
    pub d: f32,
    pub dmin: f32,
}

/// Activations `32c..32c + 32` of a Q8_K block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn act(y: &BlockQ8K, c: usize) -> __m256i {
    // SAFETY: `c < 8`, so the 32 bytes from `32c` are inside `qs`.
    unsafe { _mm256_loadu_si256(y.qs.as_ptr().add(32 * c).cast()) }
}

/// 32 bytes of `bytes` from `at`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_at(bytes: &[u8], at: usize) -> __m256i {
    let mut chunk = [0u8; 32];
    chunk.copy_from_slice(&bytes[at..at + 32]);
    load32(&chunk)
}

/// `(v >> shift) & mask` per byte (the shift runs in 16-bit lanes; the mask drops what
/// crossed from the neighbouring byte).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bits(v: __m256i, shift: u32, mask: i8) -> __m256i {
    let shifted = _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift as i32));
    _mm256_and_si256(shifted, _mm256_set1_epi8(mask))
}

/// The eight integer lanes of one token: `Σ_c scales_c · (levels_c · activations_c)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lanes<const M: usize>(b: &Decoded<M>, y: &BlockQ8K) -> __m256i {
    let mut lanes = _mm256_setzero_si256();
    for c in 0..8 {
        let products = _mm256_maddubs_epi16(b.levels[c], act(y, c));
        lanes = _mm256_add_epi32(lanes, _mm256_madd_epi16(products, b.scales[c]));
    }
    lanes
}

/// One token's super-block for the types with a mins term (Q2_K, Q4_K, Q5_K).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn with_mins<const M: usize>(b: &Decoded<M>, y: &BlockQ8K, mins: i32) -> SuperBlock {
    let sum = sum_lanes(lanes(b, y));
    SuperBlock { d: q8k_d(y) * b.d, sum, dmin: q8k_d(y) * b.dmin, mins }
}

/// One token's super-block for the types stored `offset` above their quants (Q3_K, Q6_K).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn with_offset(b: &Decoded<16>, y: &BlockQ8K, offset: i32) -> SuperBlock {
    let sum = sum_lanes(lanes(b, y)).wrapping_sub(offset.wrapping_mul(weighted_bsum(y, &b.ints)));
    SuperBlock { d: b.d * q8k_d(y), sum, dmin: 0.0, mins: 0 }
}

/// `Σ_g scales_g · bsum_g`.
#[inline(always)]
fn weighted_bsum(y: &BlockQ8K, scales: &[i32; 16]) -> i32 {
    (0..16).map(|g| scales[g] * bsum(y, g)).sum()
}

/// The sum of the eight lanes (exact, in wrapping arithmetic like every integer step).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn sum_lanes(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<1>(s)))
}

/// One token's product: each super-block decoded by `prep`, made a [`SuperBlock`] by
/// `mul`, and added to the running sum as the scalar kernels add it.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k_dot<W: Block, P>(
    w: &[u8],
    act: ActRow,
    prep: impl Fn(&W) -> P,
    mul: impl Fn(&P, &BlockQ8K) -> SuperBlock,
) -> f32 {
    let weights: &[W] = as_blocks(w).unwrap_or_default();
    let blocks: &[BlockQ8K] = as_blocks(act.blocks).unwrap_or_default();
    let mut acc = 0f32;
    for (x, y) in weights.iter().zip(blocks) {
        // A hint only (the address need not be valid): the rows stream from memory.
        _mm_prefetch::<_MM_HINT_T0>((x as *const W).cast::<i8>().wrapping_add(PREFETCH_AHEAD));
        acc = add_super_block(acc, &mul(&prep(x), y));
    }
    acc
}

/// The scale vectors of chunks with two 16-element groups each.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn pair_scales(scales: &[i32; 16]) -> [__m256i; 8] {
    std::array::from_fn(|c| {
        _mm256_set_m128i(
            _mm_set1_epi16(scales[2 * c + 1] as i16),
            _mm_set1_epi16(scales[2 * c] as i16),
        )
    })
}

/// The 2-bit chunks of Q2_K/Q3_K: element `128h + 32k + l` is bits `2k` of `qs[32h + l]`;
/// `extra(g)` adds chunk `g`'s high bits.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn levels_2bit(qs: &[u8; 64], extra: impl Fn(usize) -> __m256i) -> [__m256i; 8] {
    let halves = [load_at(qs, 0), load_at(qs, 32)];
    std::array::from_fn(|g| _mm256_or_si256(bits(halves[g / 4], 2 * (g % 4) as u32, 3), extra(g)))
}

/// The 4-bit chunks of Q4_K/Q5_K: chunk `2c` the low nibbles of `qs[32c..]`, `2c + 1` the
/// high ones; `high(j)` adds chunk `j`'s bit 4.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn levels_4bit(qs: &[u8; 128], high: impl Fn(usize) -> __m256i) -> [__m256i; 8] {
    std::array::from_fn(|j| {
        let v = load_at(qs, 32 * (j / 2));
        _mm256_or_si256(bits(v, 4 * (j % 2) as u32, 0x0F), high(j))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn prep_q2_k(x: &BlockQ2K) -> Decoded<16> {
    let (scales, mins) = q2k_scales(x);
    Decoded {
        levels: levels_2bit(&x.qs, |_| _mm256_setzero_si256()),
        scales: pair_scales(&scales),
        ints: mins,
        d: f16(x.d),
        dmin: f16(x.dmin),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn prep_q3_k(x: &BlockQ3K) -> Decoded<16> {
    let hmask = load32(&x.hmask);
    let scales = widen(q3k_scales(&x.scales));
    Decoded {
        levels: levels_2bit(&x.qs, |g| _mm256_slli_epi16(bits(hmask, g as u32, 1), 2)),
        scales: pair_scales(&scales),
        ints: scales,
        d: f16(x.d),
        dmin: 0.0,
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q2_k_body(w: &[u8], a: ActRow) -> f32 {
    k_dot(w, a, |x| prep_q2_k(x), |b, y: &BlockQ8K| with_mins(b, y, q2k_mins(&b.ints, y)))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q3_k_body(w: &[u8], a: ActRow) -> f32 {
    k_dot(w, a, |x| prep_q3_k(x), |b, y: &BlockQ8K| with_offset(b, y, Q3K_OFFSET))
}

/// Q4_K/Q5_K decoded, `high(j)` giving chunk `j`'s bit 4.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn decode_k4(
    packed: &[u8; 12],
    qs: &[u8; 128],
    d: [u8; 2],
    dmin: [u8; 2],
    high: impl Fn(usize) -> __m256i,
) -> Decoded<8> {
    let (scales, mins) = k4_scales(packed);
    Decoded {
        levels: levels_4bit(qs, high),
        scales: scales.map(|s| _mm256_set1_epi16(s as i16)),
        ints: mins,
        d: f16(d),
        dmin: f16(dmin),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn prep_q4_k(x: &BlockQ4K) -> Decoded<8> {
    decode_k4(&x.scales, &x.qs, x.d, x.dmin, |_| _mm256_setzero_si256())
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn prep_q5_k(x: &BlockQ5K) -> Decoded<8> {
    let qh = load32(&x.qh);
    decode_k4(&x.scales, &x.qs, x.d, x.dmin, |j| _mm256_slli_epi16(bits(qh, j as u32, 1), 4))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn prep_q6_k(x: &BlockQ6K) -> Decoded<16> {
    let ql = [load_at(&x.ql, 0), load_at(&x.ql, 32), load_at(&x.ql, 64), load_at(&x.ql, 96)];
    let qh = [load_at(&x.qh, 0), load_at(&x.qh, 32)];
    let scales = widen(x.scales);
    Decoded {
        levels: std::array::from_fn(|g| {
            let (h, k) = (g / 4, g % 4);
            let low = bits(ql[2 * h + k % 2], 4 * (k as u32 / 2), 0x0F);
            _mm256_or_si256(low, _mm256_slli_epi16(bits(qh[h], 2 * k as u32, 3), 4))
        }),
        scales: pair_scales(&scales),
        ints: scales,
        d: f16(x.d),
        dmin: 0.0,
    }
}

/// How far above their quants Q3_K and Q6_K store their levels.
pub(super) const Q3K_OFFSET: i32 = 4;
pub(super) const Q6K_OFFSET: i32 = 32;

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_body(w: &[u8], a: ActRow) -> f32 {
    k_dot(w, a, |x| prep_q4_k(x), |b, y: &BlockQ8K| with_mins(b, y, k4_mins(&b.ints, y)))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_body(w: &[u8], a: ActRow) -> f32 {
    k_dot(w, a, |x| prep_q5_k(x), |b, y: &BlockQ8K| with_mins(b, y, k4_mins(&b.ints, y)))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_body(w: &[u8], a: ActRow) -> f32 {
    k_dot(w, a, |x| prep_q6_k(x), |b, y: &BlockQ8K| with_offset(b, y, Q6K_OFFSET))
}
