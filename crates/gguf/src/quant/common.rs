//! Shared pieces of ggml's reference quantizers: rounding, half-precision scales, and the
//! scale searches (`make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`).
//!
//! Arithmetic follows ggml-quants.c (ggml d99724f) operation for operation, in f32 with
//! no fused multiply-adds, so that the bytes come out identical: every `a * b * c` below
//! is `(a * b) * c`, as in C.

/// Groups whose largest magnitude is below this are all-zero (`GROUP_MAX_EPS`).
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// Rounds to the nearest integer, ties to even, with ggml's mantissa trick (exact for
/// |x| <= 4194303).
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `GGML_FP32_TO_FP16` as little-endian bytes (nearest-even).
#[inline(always)]
pub fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// `GGML_FP16_TO_FP32` of two little-endian bytes.
#[inline(always)]
pub fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// The element of largest magnitude, keeping its sign (the first one on ties), and that
/// magnitude.
#[inline(always)]
pub fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Symmetric quantization to `[-nmax, nmax)` with weights `x^2`, searching 18 scales
/// around `nmax / max` for the best weighted fit. Levels go to `l` offset by `nmax`;
/// returns the scale (`make_qx_quants` with `rmse_type = 1`).
#[inline(always)]
pub fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (q, &v) in l.iter_mut().zip(x) {
        let li = level(iscale, v);
        *q = (li + nmax) as i8;
        let w = v * v;
        sumlx += w * v * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    // The 18 other scales in pairs: each pair's sums in one pass (two independent chains
    // for the processor to overlap, each in the same order as alone), then the two
    // candidates judged in turn, as one at a time would.
    const OTHERS: [i32; 18] = [-9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    for pair in OTHERS.as_chunks::<2>().0 {
        let iscales = pair.map(|is| -(nmax as f32 + 0.1 * is as f32) / max);
        let [a, b] = iscales;
        let (mut sums_a, mut sums_b) = ((0f32, 0f32), (0f32, 0f32));
        for &v in x {
            let (la, lb) = (level(a, v) as f32, level(b, v) as f32);
            let w = v * v;
            sums_a.0 += w * v * la;
            sums_a.1 += w * la * la;
            sums_b.0 += w * v * lb;
            sums_b.1 += w * lb * lb;
        }
        for (&iscale, (sumlx, suml2)) in iscales.iter().zip([sums_a, sums_b]) {
            if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
                for (q, &v) in l.iter_mut().zip(x) {
                    *q = (level(iscale, v) + nmax) as i8;
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
    }
    scale
}

/// Symmetric quantization to `[-nmax, nmax)` refined by up to five passes of coordinate
/// descent on `(sum w x l)^2 / sum w l^2` with `w = x^2`. Levels go to `l` offset by
/// `nmax`; returns the scale (`make_q3_quants` with `do_rmse`).
#[inline(always)]
pub fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (q, &v) in l.iter_mut().zip(x) {
        let li = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *q = li as i8;
        let w = v * v;
        sumlx += w * v * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for (q, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let old = f32::from(*q);
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new != i32::from(*q) {
                    slx += w * v * new as f32;
                    sl2 += w * new as f32 * new as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for q in l.iter_mut() {
        *q += nmax as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// Parameters of the asymmetric scale search.
pub struct Search {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Minimise absolute rather than squared error.
    pub use_mad: bool,
}

/// Asymmetric quantization `x ~ scale * l - min` with `l` in `[0, nmax]`, searching
/// `nstep + 1` scales and solving weighted least squares for each. Returns
/// `(scale, min)` with `min >= 0` (`make_qkx2_quants`).
#[inline(always)]
pub fn make_qkx2_quants(
    s: &Search,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    aux: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmax = s.nmax as f32;
    let error = |d: f32, w: f32| w * if s.use_mad { d.abs() } else { d * d };
    let mut iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, s.nmax);
        l[i] = q as u8;
        best_error += error(scale * q as f32 + min - x[i], weights[i]);
    }
    if s.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=s.nstep {
        iscale = (s.rmin + s.rdelta * is as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, s.nmax);
            aux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                cur_error += error(this_scale * f32::from(aux[i]) + this_min - x[i], weights[i]);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(4194303.0), 4194303);
    }
}
