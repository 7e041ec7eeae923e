//! AVX-512 weighted sums of value rows for several queries at once (attention's
//! probabilities times values): each row is loaded (and widened from f16) once for up to
//! [`QUERIES`] outputs, 64 elements of each kept in registers. Every element adds its
//! terms in row order, one `fma` each, as the one-output kernels do, so the bits are
//! theirs.

use std::arch::x86_64::*;

use super::float::whole_rows;

/// Outputs per pass: 6 × 4 accumulators, 4 rows' vectors and a weight fill 29 registers.
const QUERIES: usize = 6;

/// [`super::WeightedSums`] over f16 rows (only reachable through `Kernels::available`,
/// after AVX-512F is checked, and the AVX2 features before it).
pub(super) fn weighted_many_f16(w: &[&[f32]], rows: &[u8], stride: usize, outs: &mut [&mut [f32]]) {
    // SAFETY: see above.
    unsafe { many::<true>(w, rows, stride, outs, super::avx2::weighted_f16) }
}

/// [`super::WeightedSums`] over f32 rows, as [`weighted_many_f16`].
pub(super) fn weighted_many_f32(w: &[&[f32]], rows: &[u8], stride: usize, outs: &mut [&mut [f32]]) {
    // SAFETY: as `weighted_many_f16`.
    unsafe { many::<false>(w, rows, stride, outs, super::avx2::weighted_f32) }
}

/// Passes of up to [`QUERIES`] outputs; outputs of unequal lengths (never in attention)
/// go one at a time through `one`.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn many<const F16: bool>(
    w: &[&[f32]],
    rows: &[u8],
    stride: usize,
    outs: &mut [&mut [f32]],
    one: super::WeightedSum,
) {
    let n = outs.first().map_or(0, |o| o.len());
    if w.len() != outs.len() || outs.iter().any(|o| o.len() != n) {
        return super::float::one_at_a_time(one, w, rows, stride, outs);
    }
    let width = if F16 { 2 } else { 4 };
    let shortest = w.iter().map(|w| w.len()).min().unwrap_or(0);
    let count = whole_rows(rows.len(), stride, n * width, shortest);
    for (w, outs) in w.chunks(QUERIES).zip(outs.chunks_mut(QUERIES)) {
        match w.len() {
            6 => pass::<6, F16>(w, rows, stride, outs, count),
            5 => pass::<5, F16>(w, rows, stride, outs, count),
            4 => pass::<4, F16>(w, rows, stride, outs, count),
            3 => pass::<3, F16>(w, rows, stride, outs, count),
            2 => pass::<2, F16>(w, rows, stride, outs, count),
            _ => pass::<1, F16>(w, rows, stride, outs, count),
        }
    }
}

/// `Q` outputs over the first `count` rows: 64 elements at a time, then 16, then the
/// tail element by element.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
fn pass<const Q: usize, const F16: bool>(
    w: &[&[f32]],
    rows: &[u8],
    stride: usize,
    outs: &mut [&mut [f32]],
    count: usize,
) {
    let n = outs.first().map_or(0, |o| o.len());
    let (wide, vectors) = (n / 64 * 64, n / 16 * 16);
    let weights: [*const f32; Q] = std::array::from_fn(|q| w[q].as_ptr());
    let out: [*mut f32; Q] = std::array::from_fn(|q| outs[q].as_mut_ptr());
    let width = if F16 { 2 } else { 4 };
    for c in (0..wide).step_by(64) {
        // SAFETY: `c + 64 <= n`; rows `j < count` hold `n · width` bytes from `j · stride`
        // (`whole_rows`); each weight run is at least `count` long.
        unsafe { columns::<Q, 4, F16>(weights, rows.as_ptr(), stride, out, c, count) };
    }
    for c in (wide..vectors).step_by(16) {
        // SAFETY: as above, with `c + 16 <= n`.
        unsafe { columns::<Q, 1, F16>(weights, rows.as_ptr(), stride, out, c, count) };
    }
    if vectors == n {
        return;
    }
    for (w, o) in w.iter().zip(outs.iter_mut()) {
        for (j, &s) in w.iter().enumerate().take(count) {
            for (e, o) in o.iter_mut().enumerate().skip(vectors) {
                let at = j * stride + e * width;
                let x = match rows.get(at..at + width) {
                    Some(&[a, b]) => half::f16::from_le_bytes([a, b]).to_f32(),
                    Some(&[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
                    _ => 0.0,
                };
                *o = s.mul_add(x, *o);
            }
        }
    }
}

/// Elements `c..c + 16 · M` of `Q` outputs, kept in registers over `count` rows.
///
/// # Safety
/// `c + 16 · M` is within every output; rows `j < count` hold those elements from byte
/// `j · stride`; every weight run holds `count` weights.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
unsafe fn columns<const Q: usize, const M: usize, const F16: bool>(
    weights: [*const f32; Q],
    rows: *const u8,
    stride: usize,
    out: [*mut f32; Q],
    c: usize,
    count: usize,
) {
    let width = if F16 { 2 } else { 4 };
    let mut acc = [[_mm512_setzero_ps(); M]; Q];
    for (acc, &o) in acc.iter_mut().zip(&out) {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's.
            *a = unsafe { _mm512_loadu_ps(o.add(c + 16 * k)) };
        }
    }
    for j in 0..count {
        let mut x = [_mm512_setzero_ps(); M];
        for (k, x) in x.iter_mut().enumerate() {
            // SAFETY: the caller's.
            let at = unsafe { rows.add(j * stride + (c + 16 * k) * width) };
            *x = if F16 {
                // SAFETY: 16 halves from `at`.
                _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(at.cast()) })
            } else {
                // SAFETY: 16 floats from `at`.
                unsafe { _mm512_loadu_ps(at.cast()) }
            };
        }
        for (acc, &w) in acc.iter_mut().zip(&weights) {
            // SAFETY: `j < count`.
            let s = _mm512_set1_ps(unsafe { *w.add(j) });
            for (a, &x) in acc.iter_mut().zip(&x) {
                *a = _mm512_fmadd_ps(s, x, *a);
            }
        }
    }
    for (acc, &o) in acc.iter().zip(&out) {
        for (k, &a) in acc.iter().enumerate() {
            // SAFETY: the caller's.
            unsafe { _mm512_storeu_ps(o.add(c + 16 * k), a) };
        }
    }
}
