//! AVX-512 float panel kernels: [`WIDE_ROWS`] weight rows against [`WIDE_TOKENS`]
//! tokens per pass, in 16-wide registers (24 accumulators of AVX-512's 32 registers).
//!
//! The one-token kernel keeps 32 lanes (element `i` goes to lane `i % 32`); a 16-wide
//! register holds half of them, so the panel walks the row twice, once per half, and each
//! lane still adds its elements in order by `fma`. The tail and the fold are the
//! one-token kernel's, so every output has the one-token bits.

use std::arch::x86_64::*;

use super::avx2::{decode_bf16, decode_f16, decode_f32};
use super::avx2_panel::fold_tokens;
use super::float::{LANES, fold};
use super::{Panel, Panels, WIDE_ROWS, WIDE_TOKENS};

const ROWS: usize = WIDE_ROWS;
const TOKENS: usize = WIDE_TOKENS;
type WideOut = [[f32; TOKENS]; ROWS];

/// The panels with these for the float types, if this CPU has AVX-512F (on top of the
/// AVX2 kernels' AVX2, FMA and F16C).
pub fn upgrade(panels: Panels) -> Option<Panels> {
    is_x86_feature_detected!("avx512f").then_some(Panels {
        f32: Panel::Wide(panel_f32),
        f16: Panel::Wide(panel_f16),
        bf16: Panel::Wide(panel_bf16),
        ..panels
    })
}

/// Declares safe wide float panel kernels over their `#[target_feature]` bodies;
/// `$width` is the bytes per weight.
macro_rules! checked_wide_panel {
    ($($name:ident => $width:expr, $load:ident, $decode:ident;)*) => {$(
        fn $name(rows: [&[u8]; ROWS], xs: &[&[f32]; TOKENS], out: &mut WideOut) {
            #[target_feature(enable = "avx512f,avx2,fma,f16c")]
            fn body(rows: [&[u8]; ROWS], xs: &[&[f32]; TOKENS], out: &mut WideOut) {
                let n = rows.iter().map(|w| w.len() / $width);
                let n = xs.iter().map(|x| x.len()).chain(n).fold(usize::MAX, usize::min);
                // SAFETY: `wide_panel` loads sixteen weights from `at` only where
                // `at + 16 <= n <= w.len() / width`.
                let load = |r: usize, at: usize| unsafe { $load(rows[r], at) };
                wide_panel(n, xs, out, load, |r, j| $decode(rows[r], j));
            }
            // SAFETY: only reachable through `upgrade`, after the CPU features are
            // checked.
            unsafe { body(rows, xs, out) }
        }
    )*};
}

checked_wide_panel! {
    panel_f32 => 4, load_f32, decode_f32;
    panel_f16 => 2, load_f16, decode_f16;
    panel_bf16 => 2, load_bf16, decode_bf16;
}

/// Sixteen f32 weights from element `at`.
///
/// # Safety
/// `4 · (at + 16) <= w.len()`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
unsafe fn load_f32(w: &[u8], at: usize) -> __m512 {
    // SAFETY: in bounds by the caller's promise.
    unsafe { _mm512_loadu_ps(w.as_ptr().add(4 * at).cast()) }
}

/// Sixteen f16 weights from element `at`, widened.
///
/// # Safety
/// `2 · (at + 16) <= w.len()`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
unsafe fn load_f16(w: &[u8], at: usize) -> __m512 {
    // SAFETY: in bounds by the caller's promise.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(w.as_ptr().add(2 * at).cast()) })
}

/// Sixteen bf16 weights from element `at`, widened.
///
/// # Safety
/// `2 · (at + 16) <= w.len()`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
unsafe fn load_bf16(w: &[u8], at: usize) -> __m512 {
    // SAFETY: in bounds by the caller's promise.
    let h = unsafe { _mm256_loadu_si256(w.as_ptr().add(2 * at).cast()) };
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
}

/// The panel over the first `n` elements (`n` at most every row's length): for each half
/// of the one-token kernel's 32 lanes, one walk down the rows adding that half's elements
/// for every row and token; then each product's tail and fold as the one-token kernel's.
/// `load(r, at)` gives row `r`'s sixteen weights from `at`, `decode(r, j)` one.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
fn wide_panel(
    n: usize,
    xs: &[&[f32]; TOKENS],
    out: &mut WideOut,
    load: impl Fn(usize, usize) -> __m512,
    decode: impl Fn(usize, usize) -> f32,
) {
    const HALF: usize = LANES / 2;
    let full = n / LANES * LANES;
    let mut lanes = std::mem::MaybeUninit::<[[[f32; LANES]; TOKENS]; ROWS]>::uninit();
    let base = lanes.as_mut_ptr().cast::<f32>();
    for h in 0..2 {
        let mut acc = [[_mm512_setzero_ps(); TOKENS]; ROWS];
        let mut at = HALF * h;
        while at < full {
            let w: [__m512; ROWS] = std::array::from_fn(|r| load(r, at));
            for (t, x) in xs.iter().enumerate() {
                // SAFETY: `at + 16 <= full <= n <= x.len()`.
                let xv = unsafe { _mm512_loadu_ps(x.as_ptr().add(at)) };
                for (acc, &wv) in acc.iter_mut().zip(&w) {
                    acc[t] = _mm512_fmadd_ps(wv, xv, acc[t]);
                }
            }
            at += LANES;
        }
        for (r, acc) in acc.iter().enumerate() {
            for (t, &a) in acc.iter().enumerate() {
                // SAFETY: 16 floats at `16h` of the 32 of row `r`, token `t`: inside
                // `lanes`.
                unsafe { _mm512_storeu_ps(base.add((r * TOKENS + t) * LANES + HALF * h), a) };
            }
        }
    }
    // SAFETY: the two halves' stores above wrote every float of `lanes` (zeroing it
    // first cost a tenth of the panel's time).
    let mut lanes = unsafe { lanes.assume_init() };
    if full == n {
        return fold_rows(&lanes, out);
    }
    for (r, (out, lanes)) in out.iter_mut().zip(&mut lanes).enumerate() {
        for ((o, l), x) in out.iter_mut().zip(lanes).zip(xs) {
            for (j, &v) in (full..n).zip(x.get(full..n).unwrap_or_default()) {
                l[j % LANES] = decode(r, j).mul_add(v, l[j % LANES]);
            }
            *o = fold(l);
        }
    }
}

/// Every product's [`fold`] in vectors: per row, each token's lanes `a` as `(a[l] +
/// a[8 + l]) + (a[16 + l] + a[24 + l])`, then [`fold8`](super::float::fold8) for eight
/// tokens at once (two of them empty).
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
fn fold_rows(lanes: &[[[f32; LANES]; TOKENS]; ROWS], out: &mut WideOut) {
    for (out, lanes) in out.iter_mut().zip(lanes) {
        let mut v = [_mm256_setzero_ps(); 8];
        for (v, a) in v.iter_mut().zip(lanes) {
            // SAFETY: four runs of 8 inside the 32 floats of `a`.
            *v = unsafe {
                let at = |k: usize| _mm256_loadu_ps(a.as_ptr().add(8 * k));
                _mm256_add_ps(_mm256_add_ps(at(0), at(1)), _mm256_add_ps(at(2), at(3)))
            };
        }
        let mut sums = [0f32; 8];
        // SAFETY: writes the 8 floats of `sums`.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), fold_tokens(v)) };
        out.copy_from_slice(&sums[..TOKENS]);
    }
}
