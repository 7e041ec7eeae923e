//! AVX2 dot products of the K-quant super-blocks with Q8_K activations: levels unpacked
//! 32 at a time in registers, `maddubs` with the activations, `madd` with the group scales
//! into eight integer lanes, then the scalar kernels' float steps (`fma` per lane, the
//! mins term apart), so the two give the same bits.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, q3k_scales,
};

use super::avx2::{checked, f16, lanes_dot, load32};
use super::kquants::{bsum, k4_scales, q2k_scales, q8k_d, widen};

checked! {
    fn dot_q2_k(w: &[u8], a: &[u8]) => q2_k_body;
    fn dot_q3_k(w: &[u8], a: &[u8]) => q3_k_body;
    fn dot_q4_k(w: &[u8], a: &[u8]) => q4_k_body;
    fn dot_q5_k(w: &[u8], a: &[u8]) => q5_k_body;
    fn dot_q6_k(w: &[u8], a: &[u8]) => q6_k_body;
}

/// Activations `32c..32c + 32` of a Q8_K block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn act(y: &BlockQ8K, c: usize) -> __m256i {
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

/// `lanes + scales · (levels · activations)`: `scales` holds one i16 scale per element
/// pair (one value for 32 elements, or two halves for two 16-element groups).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn add_chunk(lanes: __m256i, levels: __m256i, act: __m256i, scales: __m256i) -> __m256i {
    _mm256_add_epi32(lanes, _mm256_madd_epi16(_mm256_maddubs_epi16(levels, act), scales))
}

/// The scale vector of chunk `c` with 16-element groups.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn pair_scales(scales: &[i32; 16], c: usize) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(scales[2 * c + 1] as i16), _mm_set1_epi16(scales[2 * c] as i16))
}

/// Lanes of 2-bit chunks (plus `extra(g)`'s bits) with 16-element scales, less
/// `offset · Σ scale · bsum` in lane 0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lanes_2bit(
    qs: &[u8; 64],
    y: &BlockQ8K,
    scales: &[i32; 16],
    offset: i32,
    extra: impl Fn(usize) -> __m256i,
) -> __m256i {
    let mut lanes = _mm256_setzero_si256();
    for h in 0..2 {
        let v = load_at(qs, 32 * h);
        for k in 0..4 {
            let g = 4 * h + k;
            let levels = _mm256_or_si256(bits(v, 2 * k as u32, 3), extra(g));
            lanes = add_chunk(lanes, levels, act(y, g), pair_scales(scales, g));
        }
    }
    correct(lanes, y, scales, offset)
}

/// `lanes[0] −= offset · Σ scale_g · bsum_g`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn correct(lanes: __m256i, y: &BlockQ8K, scales: &[i32; 16], offset: i32) -> __m256i {
    if offset == 0 {
        return lanes;
    }
    let correction: i32 = (0..16).map(|g| scales[g] * bsum(y, g)).sum();
    _mm256_sub_epi32(lanes, _mm256_setr_epi32(offset * correction, 0, 0, 0, 0, 0, 0, 0))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q2_k_body(w: &[u8], a: &[u8]) -> f32 {
    lanes_dot(w, a, -1.0, |x: &BlockQ2K, y: &BlockQ8K| {
        let (scales, mins) = q2k_scales(x, y);
        let lanes = lanes_2bit(&x.qs, y, &scales, 0, |_| _mm256_setzero_si256());
        (q8k_d(y) * f16(x.d), lanes, (q8k_d(y) * f16(x.dmin)) * mins as f32)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q3_k_body(w: &[u8], a: &[u8]) -> f32 {
    lanes_dot(w, a, -1.0, |x: &BlockQ3K, y: &BlockQ8K| {
        let hmask = load32(&x.hmask);
        let scales = widen(q3k_scales(&x.scales));
        let lanes =
            lanes_2bit(&x.qs, y, &scales, 4, |g| _mm256_slli_epi16(bits(hmask, g as u32, 1), 2));
        (f16(x.d) * q8k_d(y), lanes, 0.0)
    })
}

/// Lanes of Q4_K/Q5_K chunks (`high(c, half)` adds bit 4) with 32-element scales.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lanes_4bit(
    qs: &[u8; 128],
    y: &BlockQ8K,
    scales: &[i32; 8],
    high: impl Fn(usize, u32) -> __m256i,
) -> __m256i {
    let mut lanes = _mm256_setzero_si256();
    for c in 0..4 {
        let v = load_at(qs, 32 * c);
        let lo = _mm256_or_si256(bits(v, 0, 0x0F), high(c, 0));
        let hi = _mm256_or_si256(bits(v, 4, 0x0F), high(c, 1));
        let s = |j: usize| _mm256_set1_epi16(scales[j] as i16);
        lanes = add_chunk(lanes, lo, act(y, 2 * c), s(2 * c));
        lanes = add_chunk(lanes, hi, act(y, 2 * c + 1), s(2 * c + 1));
    }
    lanes
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_body(w: &[u8], a: &[u8]) -> f32 {
    lanes_dot(w, a, -1.0, |x: &BlockQ4K, y: &BlockQ8K| {
        let (scales, mins) = k4_scales(&x.scales, y);
        let lanes = lanes_4bit(&x.qs, y, &scales, |_, _| _mm256_setzero_si256());
        (q8k_d(y) * f16(x.d), lanes, (q8k_d(y) * f16(x.dmin)) * mins as f32)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_body(w: &[u8], a: &[u8]) -> f32 {
    lanes_dot(w, a, -1.0, |x: &BlockQ5K, y: &BlockQ8K| {
        let (scales, mins) = k4_scales(&x.scales, y);
        let qh = load32(&x.qh);
        let lanes = lanes_4bit(&x.qs, y, &scales, |c, half| {
            _mm256_slli_epi16(bits(qh, 2 * c as u32 + half, 1), 4)
        });
        (q8k_d(y) * f16(x.d), lanes, (q8k_d(y) * f16(x.dmin)) * mins as f32)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_body(w: &[u8], a: &[u8]) -> f32 {
    lanes_dot(w, a, -1.0, |x: &BlockQ6K, y: &BlockQ8K| {
        let scales = widen(x.scales);
        let mut lanes = _mm256_setzero_si256();
        for h in 0..2 {
            let ql = [load_at(&x.ql, 64 * h), load_at(&x.ql, 64 * h + 32)];
            let qh = load_at(&x.qh, 32 * h);
            for k in 0..4 {
                let low = bits(ql[k % 2], 4 * (k as u32 / 2), 0x0F);
                let high = _mm256_slli_epi16(bits(qh, 2 * k as u32, 3), 4);
                let g = 4 * h + k;
                lanes = add_chunk(
                    lanes,
                    _mm256_or_si256(low, high),
                    act(y, g),
                    pair_scales(&scales, g),
                );
            }
        }
        (f16(x.d) * q8k_d(y), correct(lanes, y, &scales, 32), 0.0)
    })
}
