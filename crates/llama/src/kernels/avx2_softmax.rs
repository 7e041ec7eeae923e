//! The AVX2 softmax of attention scores: the scalar definition (`softmax.rs`) with the
//! exponential of four scores per f64 vector — the same f64 steps, the table read by a
//! gather — and the scale, max and normalization eight at a time. The sum stays one f32
//! add per score in order, so both give the same bits.

use std::arch::x86_64::*;

use super::softmax::{C0, C1, C2, EXP_TABLE, INV_LN2_32, OVERFLOW, SHIFT, UNDERFLOW};

/// [`super::Softmax`] (only reachable through `avx2::kernels()`, after the CPU features
/// are checked).
pub(super) fn softmax(x: &mut [f32], scale: f32) {
    // SAFETY: see above.
    unsafe { body(x, scale) }
}

/// `e^x` of four values, as [`super::softmax::exp`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn exp4(x: __m128) -> __m128 {
    let z = _mm256_mul_pd(_mm256_cvtps_pd(x), _mm256_set1_pd(INV_LN2_32));
    let shift = _mm256_set1_pd(SHIFT);
    let shifted = _mm256_add_pd(z, shift);
    let k = _mm256_castpd_si256(shifted);
    let r = _mm256_sub_pd(z, _mm256_sub_pd(shifted, shift));
    let index = _mm256_and_si256(k, _mm256_set1_epi64x(31));
    // SAFETY: every index is below 32, the table's length.
    let entry = unsafe { _mm256_i64gather_epi64::<8>(EXP_TABLE.as_ptr().cast(), index) };
    let s = _mm256_castsi256_pd(_mm256_add_epi64(entry, _mm256_slli_epi64::<47>(k)));
    let p = _mm256_fmadd_pd(_mm256_set1_pd(C0), r, _mm256_set1_pd(C1));
    let q = _mm256_fmadd_pd(_mm256_set1_pd(C2), r, _mm256_set1_pd(1.0));
    let y = _mm256_fmadd_pd(p, _mm256_mul_pd(r, r), q);
    let e = _mm256_cvtpd_ps(_mm256_mul_pd(y, s));
    let under = _mm_cmp_ps::<_CMP_LT_OQ>(x, _mm_set1_ps(UNDERFLOW));
    let over = _mm_cmp_ps::<_CMP_GT_OQ>(x, _mm_set1_ps(OVERFLOW));
    _mm_blendv_ps(_mm_andnot_ps(under, e), _mm_set1_ps(f32::INFINITY), over)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn body(x: &mut [f32], scale: f32) {
    let whole = x.len() / 8 * 8;
    let (head, tail) = x.split_at_mut(whole);
    let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
    for run in head.chunks_exact_mut(8) {
        // SAFETY: `run` is 8 floats.
        let v = unsafe { _mm256_mul_ps(_mm256_loadu_ps(run.as_ptr()), _mm256_set1_ps(scale)) };
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(run.as_mut_ptr(), v) };
        max = _mm256_max_ps(max, v);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: writes the 8 floats of `lanes`.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max) };
    tail.iter_mut().for_each(|v| *v *= scale);
    let max = lanes.iter().chain(tail.iter()).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for run in head.chunks_exact_mut(4) {
        // SAFETY: `run` is 4 floats.
        let v = unsafe { _mm_loadu_ps(run.as_ptr()) };
        let e = exp4(_mm_sub_ps(v, _mm_set1_ps(max)));
        // SAFETY: as above.
        unsafe { _mm_storeu_ps(run.as_mut_ptr(), e) };
        for &e in run.iter() {
            sum += e;
        }
    }
    for v in tail.iter_mut() {
        *v = super::softmax::exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for run in head.chunks_exact_mut(8) {
        // SAFETY: `run` is 8 floats.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(run.as_ptr()), _mm256_set1_ps(inv));
            _mm256_storeu_ps(run.as_mut_ptr(), v);
        }
    }
    tail.iter_mut().for_each(|v| *v *= inv);
}
