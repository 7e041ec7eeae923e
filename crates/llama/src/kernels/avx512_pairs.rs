//! Two weight rows per 512-bit register, one per 256-bit half: the layout the four-row
//! panels share (`vnni512_panel`, `avx512_k_panel`), and the finish of the first.

use std::arch::x86_64::*;

use super::avx2_panel::fold_tokens;
use super::{PANEL, QUANT_ROWS};

/// The rows of a four-row panel, and the register pairs they fill.
pub(super) const ROWS: usize = QUANT_ROWS;
pub(super) const PAIRS: usize = ROWS / 2;
pub(super) type RowsOut = [[f32; PANEL]; ROWS];

/// Two rows' values in one register: `lo` in the low half, `hi` in the high half.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
pub(super) fn pair_i(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `lo` broadcast to the low half, `hi` to the high half.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
pub(super) fn pair_ps(lo: f32, hi: f32) -> __m512 {
    _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(lo), _mm512_set1_ps(hi))
}

/// The high half of a register.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
fn high(x: __m512) -> __m256 {
    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)))
}

/// Each row's outputs: every token's lanes (its half of the pair's register) folded as
/// the one-token kernels fold them, plus `extra[row]` (lane `t` for token `t`).
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
pub(super) fn finish_pairs(
    acc: &[[__m512; PANEL]; PAIRS],
    extra: &[__m256; ROWS],
    out: &mut RowsOut,
) {
    for (p, acc) in acc.iter().enumerate() {
        let (mut lo, mut hi) = ([_mm256_setzero_ps(); PANEL], [_mm256_setzero_ps(); PANEL]);
        for t in 0..PANEL {
            lo[t] = _mm512_castps512_ps256(acc[t]);
            hi[t] = high(acc[t]);
        }
        for (h, lanes) in [lo, hi].into_iter().enumerate() {
            let r = 2 * p + h;
            let sums = _mm256_add_ps(fold_tokens(lanes), extra[r]);
            // SAFETY: writes the `PANEL` = 8 floats of `out[r]`.
            unsafe { _mm256_storeu_ps(out[r].as_mut_ptr(), sums) };
        }
    }
}
