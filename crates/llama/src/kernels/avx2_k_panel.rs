//! AVX2 panel kernels of the K-quants: one weight row against [`PANEL`] tokens per pass.
//! Each super-block is unpacked once for all of them (levels and scale vectors, as the
//! one-token kernels unpack it); per token, eight `maddubs` and scaled adds give the
//! integer lanes. The rest is done for the whole tile in vectors, one lane per token:
//!
//! - the lanes summed to each token's integer by one transposing add of the tile;
//! - the integer sums `Σ_g w_g · bsum_g` (mins, or the group scales that Q3_K/Q6_K's
//!   offset correction takes) by one `madd` per token and another transposing add;
//! - the one-token kernels' float steps: `fma(d_y · d, sum, acc)` and, for
//!   Q2_K/Q4_K/Q5_K, `fma(−(d_y · dmin), mins, acc)`.
//!
//! The integers are exact and the float steps are the one-token kernels', in their order,
//! so every output has the one-token bits.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, as_blocks,
};

use super::avx2::PREFETCH_AHEAD;
use super::avx2_k::{
    Decoded, Q3K_OFFSET, Q6K_OFFSET, act, prep_q2_k, prep_q3_k, prep_q4_k, prep_q5_k, prep_q6_k,
};
use super::avx2_panel::{tile_blocks, walkable};
use super::{ActTile, PANEL};

/// Declares the panel kernels of the K-quant types. `$offset` is 0 for the types with a
/// mins term, else how far above their quants the levels are stored.
macro_rules! k_panels {
    ($($name:ident => $w:ty, $m:literal, $offset:expr, $prep:ident;)*) => {$(
        pub(super) fn $name(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
                k_panel::<$w, $m, { $offset }>(w, tile, out, |x| $prep(x));
            }
            // SAFETY: only reachable through `avx2::kernels()`, after the CPU features
            // are checked.
            unsafe { body(w, tile, out) }
        }
    )*};
}

k_panels! {
    panel_q2_k => BlockQ2K, 16, 0, prep_q2_k;
    panel_q3_k => BlockQ3K, 16, Q3K_OFFSET, prep_q3_k;
    panel_q4_k => BlockQ4K, 8, 0, prep_q4_k;
    panel_q5_k => BlockQ5K, 8, 0, prep_q5_k;
    panel_q6_k => BlockQ6K, 16, Q6K_OFFSET, prep_q6_k;
}

/// The panel loop. `prep` unpacks a super-block; `M` is the number of integers it gives
/// (mins or group scales, each over `256 / M` activations); `OFFSET` as in [`k_panels`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k_panel<W: Block, const M: usize, const OFFSET: i32>(
    w: &[u8],
    tile: &ActTile,
    out: &mut [f32; PANEL],
    prep: impl Fn(&W) -> Decoded<M>,
) {
    let weights: &[W] = as_blocks(w).unwrap_or_default();
    let acts = tile_blocks::<BlockQ8K>(tile);
    let n = walkable(weights, &acts, tile, false);
    // Lane `t` is token `t`'s running sum.
    let mut acc = _mm256_setzero_ps();
    for i in 0..n {
        // SAFETY: `i < n`, and `n` is at most every token's block count and the scale
        // run's length over `PANEL`, so each block and the `PANEL` scales from `i · PANEL`
        // are in bounds.
        let (x, ys, dy) = unsafe {
            let ys: [&BlockQ8K; PANEL] = std::array::from_fn(|t| acts[t].get_unchecked(i));
            (weights.get_unchecked(i), ys, _mm256_loadu_ps(tile.d.as_ptr().add(i * PANEL)))
        };
        // A hint only (the address need not be valid): the rows stream from memory.
        _mm_prefetch::<_MM_HINT_T0>((x as *const W).cast::<i8>().wrapping_add(PREFETCH_AHEAD));
        let b = prep(x);
        let lanes: [__m256i; PANEL] = std::array::from_fn(|t| {
            let mut lanes = _mm256_setzero_si256();
            for c in 0..8 {
                let products = _mm256_maddubs_epi16(b.levels[c], act(ys[t], c));
                lanes = _mm256_add_epi32(lanes, _mm256_madd_epi16(products, b.scales[c]));
            }
            lanes
        });
        let bsums = weighted_bsums(&ys, &b.ints);
        acc = add_super_blocks(acc, dy, (b.d, b.dmin), sum_each(lanes), bsums, OFFSET);
    }
    // SAFETY: writes the `PANEL` = 8 floats of `out`.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
}

/// Each token's super-block added to its running sum (lane `t` of each vector is token
/// `t`) as the one-token kernels add it: `sums` are the tokens' integer sums before the
/// offset correction, `bsums` the weighted activation sums (the mins term when `offset`
/// is 0, else the correction's `Σ scale_g · bsum_g`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn add_super_blocks(
    acc: __m256,
    dy: __m256,
    (d, dmin): (f32, f32),
    sums: __m256i,
    bsums: __m256i,
    offset: i32,
) -> __m256 {
    if offset == 0 {
        let acc =
            _mm256_fmadd_ps(_mm256_mul_ps(dy, _mm256_set1_ps(d)), _mm256_cvtepi32_ps(sums), acc);
        let dmin = _mm256_mul_ps(dy, _mm256_set1_ps(dmin));
        _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(bsums), acc)
    } else {
        let corrected =
            _mm256_sub_epi32(sums, _mm256_mullo_epi32(bsums, _mm256_set1_epi32(offset)));
        _mm256_fmadd_ps(_mm256_mul_ps(dy, _mm256_set1_ps(d)), _mm256_cvtepi32_ps(corrected), acc)
    }
}

/// Per token of the tile, `Σ_g ints_g · bsum_g` over the 16 activation sums of its
/// block (each of the `M` integers covers `16 / M` of them).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn weighted_bsums<const M: usize>(ys: &[&BlockQ8K; PANEL], ints: &[i32; M]) -> __m256i {
    let w: [i16; 16] = std::array::from_fn(|k| ints[k * M / 16] as i16);
    // SAFETY: reads the 32 bytes of `w`.
    let w = unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
    let pairs: [__m256i; PANEL] = std::array::from_fn(|t| {
        // SAFETY: reads the 32 bytes of the block's 16 two-byte sums.
        let b = unsafe { _mm256_loadu_si256(ys[t].bsums.as_ptr().cast()) };
        _mm256_madd_epi16(b, w)
    });
    sum_each(pairs)
}

/// The sum of each vector's eight lanes, as the lanes of one vector.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn sum_each(v: [__m256i; 8]) -> __m256i {
    // Per 128-bit half, `hadd` twice leaves each vector's sum over that half.
    let low = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let high = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(low, high),
        _mm256_permute2x128_si256::<0x31>(low, high),
    )
}
