//! The softmax of a row of attention scores, and the exponential it takes, defined so a
//! SIMD kernel can give the same bits: each score multiplied by the scale; the max
//! subtracted; [`exp`]; the values summed in order in f32; each multiplied by `1 / sum`.
//!
//! [`exp`] is the algorithm of glibc's `expf` (Szabolcs Nagy's, from Arm's optimized
//! routines), the libm this engine's goldens were made with: `x · 32/ln 2` in f64 split
//! into an integer `k` and a remainder `r`, `2^(k/32)` from a 32-entry table and the
//! exponent bits, `2^(r/32)` by a cubic, the product rounded to f32. In f64 each step has
//! the same rounding in a vector, so a SIMD kernel computes it exactly.

/// `2^(i/32)` rounded to f64, less `i << 47` (the exponent bits `k` adds back).
pub const EXP_TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// Rounds an f64 to an integer in its low mantissa bits: 1.5 · 2^52.
pub const SHIFT: f64 = 6_755_399_441_055_744.0;
/// 32 / ln 2 (`0x1.71547652b82fe` · 32).
pub const INV_LN2_32: f64 = f64::from_bits(0x3ff7_1547_652b_82fe) * 32.0;
/// `2^(r/32) ≈ 1 + C2·r + r²·(C1 + C0·r)`: the cubic's coefficients for `r/32`.
pub const C0: f64 = f64::from_bits(0x3fac_6af8_4b91_2394) / 32768.0;
pub const C1: f64 = f64::from_bits(0x3fce_bfce_50fa_c4f3) / 1024.0;
pub const C2: f64 = f64::from_bits(0x3fe6_2e42_ff0c_52d6) / 32.0;
/// Below this (ln 2^-150), `e^x` rounds to 0 in f32.
pub const UNDERFLOW: f32 = f32::from_bits(0xc2cf_f1b4);
/// Above this (ln 2^128), `e^x` is ∞ in f32.
pub const OVERFLOW: f32 = f32::from_bits(0x42b1_7217);

/// `e^x`, rounded as glibc's `expf` rounds it.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    if x < UNDERFLOW {
        return 0.0;
    }
    if x > OVERFLOW {
        return f32::INFINITY;
    }
    let z = INV_LN2_32 * f64::from(x);
    let shifted = z + SHIFT;
    let k = shifted.to_bits();
    let r = z - (shifted - SHIFT);
    let entry = EXP_TABLE.get((k % 32) as usize).copied().unwrap_or(0);
    let s = f64::from_bits(entry.wrapping_add(k << 47));
    let y = C0.mul_add(r, C1).mul_add(r * r, C2.mul_add(r, 1.0));
    (y * s) as f32
}

/// The scaled softmax of `x`, in place.
pub fn softmax(x: &mut [f32], scale: f32) {
    x.iter_mut().for_each(|v| *v *= scale);
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc's own `expf` is the reference where it is the platform's libm.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn exp_is_glibc_expf_bit_for_bit() {
        for (start, end) in [(0x8000_0000u32, (-104f32).to_bits()), (0, 89f32.to_bits())] {
            for bits in (start..=end).step_by(997) {
                let x = f32::from_bits(bits);
                assert_eq!(exp(x).to_bits(), x.exp().to_bits(), "{x:e}");
            }
        }
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn exp_is_within_an_ulp_of_the_exact_value() {
        for i in 0..100_000 {
            let x = -(i as f32) * 8.7e-4;
            let (ours, exact) = (f64::from(exp(x)), f64::from(x).exp());
            let ulp = f64::from(f32::EPSILON) * exact;
            assert!((ours - exact).abs() <= ulp, "{x}: {ours} vs {exact}");
        }
    }
}
