//! The 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (and Q8_1, for
//! activations), ported from ggml's reference quantizers so the bytes are identical.
//!
//! Layouts (little-endian, `d`/`m`/`s` are f16): Q4_0 `d qs[16]`; Q4_1 `d m qs[16]`;
//! Q5_0 `d qh[4] qs[16]`; Q5_1 `d m qh[4] qs[16]`; Q8_0 `d qs[32]`; Q8_1 `d s qs[32]`.
//! In the 4- and 5-bit types `qs[j]` holds element `j` in its low nibble and `j + 16`
//! in its high nibble; bit 4 of element `j` is bit `j` of `qh`.

use super::common::{f16_at, f16_bytes, signed_max};

const QK: usize = 32;

/// Rounds toward zero, as C's cast of a float to `int8_t` does for the in-range values
/// these quantizers produce.
#[inline(always)]
fn trunc_i8(v: f32) -> i32 {
    i32::from(v as i8)
}

/// `v.round() as i8` (half away from zero, then a saturating cast), without `roundf`:
/// on the x86-64 baseline `f32::round` is a library call per element, most of Q8_0's
/// time. `v as i32` truncates (saturating, NaN to 0); clamped to -129..=128 it still
/// saturates the same way, and `v - t` is exact wherever the step can matter. Branch-free,
/// so a block's loop vectorizes.
#[inline(always)]
fn round_i8(v: f32) -> i8 {
    let t = (v as i32).clamp(-129, 128);
    let fraction = v - t as f32;
    let r = t + i32::from(fraction >= 0.5) - i32::from(fraction <= -0.5);
    r.clamp(-128, 127) as i8
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::MAX, -f32::MAX), |(lo, hi), &v| {
        (if v < lo { v } else { lo }, if v > hi { v } else { hi })
    })
}

#[inline(always)]
fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

#[inline(always)]
pub fn quantize_q4_0(x: &[f32], out: &mut [u8]) {
    let (max, _) = signed_max(x);
    let d = max / -8.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16_bytes(d));
    for j in 0..QK / 2 {
        let q0 = trunc_i8(x[j] * id + 8.5).min(15) as u8;
        let q1 = trunc_i8(x[j + QK / 2] * id + 8.5).min(15) as u8;
        out[2 + j] = q0 | (q1 << 4);
    }
}

pub fn dequantize_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..QK / 2 {
        y[j] = (i32::from(b[2 + j] & 0x0F) - 8) as f32 * d;
        y[j + QK / 2] = (i32::from(b[2 + j] >> 4) - 8) as f32 * d;
    }
}

#[inline(always)]
pub fn quantize_q4_1(x: &[f32], out: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16_bytes(d));
    out[2..4].copy_from_slice(&f16_bytes(min));
    for j in 0..QK / 2 {
        let q0 = trunc_i8((x[j] - min) * id + 0.5).min(15) as u8;
        let q1 = trunc_i8((x[j + QK / 2] - min) * id + 0.5).min(15) as u8;
        out[4 + j] = q0 | (q1 << 4);
    }
}

pub fn dequantize_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..QK / 2 {
        y[j] = f32::from(b[4 + j] & 0x0F) * d + m;
        y[j + QK / 2] = f32::from(b[4 + j] >> 4) * d + m;
    }
}

#[inline(always)]
pub fn quantize_q5_0(x: &[f32], out: &mut [u8]) {
    let (max, _) = signed_max(x);
    let d = max / -16.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16_bytes(d));
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let q0 = trunc_i8(x[j] * id + 16.5).min(31) as u8;
        let q1 = trunc_i8(x[j + QK / 2] * id + 16.5).min(31) as u8;
        out[6 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= u32::from((q0 & 0x10) >> 4) << j;
        qh |= u32::from((q1 & 0x10) >> 4) << (j + QK / 2);
    }
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}

pub fn dequantize_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..QK / 2 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((u32::from(b[6 + j] & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + QK / 2] = ((u32::from(b[6 + j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

#[inline(always)]
pub fn quantize_q5_1(x: &[f32], out: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16_bytes(d));
    out[2..4].copy_from_slice(&f16_bytes(min));
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let q0 = ((x[j] - min) * id + 0.5) as u8;
        let q1 = ((x[j + QK / 2] - min) * id + 0.5) as u8;
        out[8 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= u32::from((q0 & 0x10) >> 4) << j;
        qh |= u32::from((q1 & 0x10) >> 4) << (j + QK / 2);
    }
    out[4..8].copy_from_slice(&qh.to_le_bytes());
}

pub fn dequantize_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..QK / 2 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (u32::from(b[8 + j] & 0x0F) | h0) as f32 * d + m;
        y[j + QK / 2] = (u32::from(b[8 + j] >> 4) | h1) as f32 * d + m;
    }
}

/// `amax / 127` and its inverse, as Q8_0 and Q8_1 scale.
#[inline(always)]
fn q8_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |a, v| if a > v.abs() { a } else { v.abs() });
    let d = amax / 127.0;
    (d, inverse(d))
}

#[inline(always)]
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let (d, id) = q8_scale(x);
    out[..2].copy_from_slice(&f16_bytes(d));
    for (q, v) in out[2..2 + QK].iter_mut().zip(&x[..QK]) {
        *q = round_i8(v * id) as u8;
    }
}

pub fn dequantize_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..QK {
        y[j] = f32::from(b[2 + j] as i8) * d;
    }
}

#[inline(always)]
pub fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    let (d, id) = q8_scale(x);
    out[..2].copy_from_slice(&f16_bytes(d));
    let mut sum = 0i32;
    for j in 0..QK {
        let q = round_i8(x[j] * id);
        out[4 + j] = q as u8;
        sum += i32::from(q);
    }
    out[2..4].copy_from_slice(&f16_bytes(sum as f32 * d));
}

pub fn dequantize_q8_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..QK {
        y[j] = f32::from(b[4 + j] as i8) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::round_i8;

    #[test]
    fn round_i8_is_round_then_a_saturating_cast() {
        let below_half = f32::from_bits(0.5f32.to_bits() - 1);
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            below_half,
            -below_half,
            1.5,
            -1.5,
            2.5,
            -2.5,
            126.5,
            127.49,
            127.5,
            -128.5,
            -128.49,
            8_388_607.5,
            1e10,
            -1e10,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
        ];
        // Every float step around the rounding points of the i8 range.
        for k in -130i32..=130 {
            let mut v = k as f32 + 0.5 - 4e-5;
            while v < k as f32 + 0.5 + 4e-5 {
                values.push(v);
                v = f32::from_bits(if v >= 0.0 { v.to_bits() + 1 } else { v.to_bits() - 1 });
            }
        }
        for v in values {
            assert_eq!(round_i8(v), v.round() as i8, "{v:e}");
        }
    }
}
