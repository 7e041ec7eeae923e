//! mlx's floating-point block quantization, as its CPU backend computes it (mlx 0.32.4;
//! `docs/mlx-format.md` §6): `mxfp4` (groups of 32, FP4 E2M1 codes, a power-of-two E8M0
//! scale whose exponent is rounded up), `nvfp4` (groups of 16, FP4 codes, an FP8 E4M3
//! scale) and `mxfp8` (groups of 32, FP8 E4M3 codes, an E8M0 scale). mlx builds these from
//! ordinary array operations, so each intermediate is rounded to the weights' dtype. Codes
//! are packed as affine's 4- and 8-bit streams; the scales are one byte per group; there
//! are no biases.

use amalgam_tensors::dtype::{DType, round_to};

use crate::affine::{code, pack_whole};

/// The FP4 E2M1 magnitudes, by code (the sign is bit 3).
const FP4: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// A floating-point block mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpMode {
    Mxfp4,
    Nvfp4,
    Mxfp8,
}

impl FpMode {
    /// The mode `--q-mode` names, if it is one of these.
    pub fn named(name: &str) -> Option<FpMode> {
        match name {
            "mxfp4" => Some(FpMode::Mxfp4),
            "nvfp4" => Some(FpMode::Nvfp4),
            "mxfp8" => Some(FpMode::Mxfp8),
            _ => None,
        }
    }

    /// The name configs record.
    pub fn name(self) -> &'static str {
        match self {
            FpMode::Mxfp4 => "mxfp4",
            FpMode::Nvfp4 => "nvfp4",
            FpMode::Mxfp8 => "mxfp8",
        }
    }

    /// The only group size the mode takes.
    pub fn group_size(self) -> usize {
        match self {
            FpMode::Nvfp4 => 16,
            FpMode::Mxfp4 | FpMode::Mxfp8 => 32,
        }
    }

    /// The only width the mode takes.
    pub fn bits(self) -> u32 {
        match self {
            FpMode::Mxfp8 => 8,
            FpMode::Mxfp4 | FpMode::Nvfp4 => 4,
        }
    }

    /// Quantizes one row of values held in `dtype` (`w.len()` a whole number of groups):
    /// `packed` gets `w.len() · bits / 32` words, `scales` one byte per group.
    pub fn quantize_row(self, dtype: DType, w: &[f32], packed: &mut [u32], scales: &mut [u8]) {
        let group = self.group_size();
        let words = group * self.bits() as usize / 32;
        let mut codes = [0u32; 32];
        let codes = &mut codes[..group];
        let groups = w.chunks_exact(group).zip(packed.chunks_exact_mut(words));
        for ((g, out), scale) in groups.zip(scales.iter_mut()) {
            *scale = self.group(dtype, g, codes);
            match self.bits() {
                8 => pack_whole::<8>(codes, out),
                _ => pack_whole::<4>(codes, out),
            }
        }
    }

    /// One group's scale byte, and its codes into `codes`.
    fn group(self, dtype: DType, g: &[f32], codes: &mut [u32]) -> u8 {
        // The largest magnitude; a NaN anywhere makes it NaN, as mlx's max does.
        let amax = g.iter().fold(0f32, |a, &x| match a.is_nan() || x.abs() <= a {
            true => a,
            false => x.abs(),
        });
        let rounded = |x: f32| round_to(dtype, x);
        match self {
            FpMode::Nvfp4 => {
                let scale = e4m3(rounded(amax / 6.0));
                let divisor = e4m3_value(scale);
                for (c, &x) in codes.iter_mut().zip(g) {
                    *c = u32::from(fp4(rounded(x / divisor)));
                }
                scale
            }
            FpMode::Mxfp4 | FpMode::Mxfp8 => {
                let top = if self == FpMode::Mxfp4 { 6.0 } else { 448.0 };
                let (scale, divisor) = e8m0(rounded(amax / top), dtype);
                for (c, &x) in codes.iter_mut().zip(g) {
                    let q = rounded(x / divisor);
                    *c = u32::from(if self == FpMode::Mxfp4 { fp4(q) } else { e4m3(q) });
                }
                scale
            }
        }
    }

    /// Dequantizes one row as `mlx_lm.convert -d` does, to bfloat16 values (whatever the
    /// model's dtype): each code's value times its group's scale, rounded once.
    pub fn dequantize_row(self, packed: &[u32], scales: &[u8], out: &mut [f32]) {
        let group = self.group_size();
        for (i, o) in out.iter_mut().enumerate() {
            let code = code(packed, i, self.bits());
            let scale = scales.get(i / group).copied().unwrap_or(0);
            let (value, factor) = match self {
                FpMode::Mxfp4 => (fp4_value(code), pow2(i32::from(scale) - 127)),
                FpMode::Mxfp8 => (e4m3_value(code as u8), pow2(i32::from(scale) - 127)),
                FpMode::Nvfp4 => (fp4_value(code), e4m3_value(scale)),
            };
            *o = round_to(DType::BF16, value * factor);
        }
    }
}

/// 2^e as an f32 (infinite above 127, subnormal from −127 down to −149).
fn pow2(e: i32) -> f32 {
    match e {
        128.. => f32::INFINITY,
        -126..=127 => f32::from_bits(((e + 127) as u32) << 23),
        -149..=-127 => f32::from_bits(1 << (e + 149)),
        _ => 0.0,
    }
}

/// The E8M0 scale byte of a group whose scale (`amax / top`, rounded) is `s`, and the
/// power of two its values are divided by: the smallest `2^e ≥ s` (`e = 0` for an all-zero
/// group), stored as `e + 127` wrapped to a byte. A non-finite `s` gives the bytes mlx's
/// conversions give on x86 (128 from f32 weights, else 0) and a divisor of 0.
fn e8m0(s: f32, dtype: DType) -> (u8, f32) {
    if !s.is_finite() {
        return (if dtype == DType::F32 { 128 } else { 0 }, 0.0);
    }
    let e = if s == 0.0 { 0 } else { ceil_log2(s) };
    ((e + 127).rem_euclid(256) as u8, round_to(dtype, pow2(e)))
}

/// The smallest `e` with `2^e ≥ s`, for a finite positive `s` (subnormals included).
fn ceil_log2(s: f32) -> i32 {
    let bits = s.to_bits();
    let (exponent, mantissa) = ((bits >> 23) as i32 & 0xFF, bits & 0x7F_FFFF);
    if exponent == 0 {
        let floor = 31 - mantissa.leading_zeros() as i32 - 149;
        return if mantissa.is_power_of_two() { floor } else { floor + 1 };
    }
    exponent - 127 + i32::from(mantissa != 0)
}

/// The FP4 code of `q`: the nearest E2M1 value, ties to the smaller magnitude (mlx takes
/// the first of equally near table entries), saturating at 6; the sign only on a non-zero
/// magnitude; 0 for NaN and infinities. Beyond 524 (reached only through a saturated
/// nvfp4 scale), the table search itself, as its f32 distances then tie.
fn fp4(q: f32) -> u8 {
    if !q.is_finite() {
        return 0;
    }
    let a = q.abs();
    if a >= 524.0 {
        return fp4_by_search(q);
    }
    let bounds = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];
    let m = bounds.iter().filter(|&&b| a > b).count() as u8;
    if m != 0 && q < 0.0 { m | 8 } else { m }
}

/// The first of the 16 signed E2M1 values nearest `q` in f32 arithmetic.
fn fp4_by_search(q: f32) -> u8 {
    let mut best = (0u8, f32::INFINITY);
    for code in 0..16u8 {
        let distance = (q - fp4_value(u32::from(code))).abs();
        if distance < best.1 {
            best = (code, distance);
        }
    }
    best.0
}

/// An FP4 code's value.
fn fp4_value(code: u32) -> f32 {
    let magnitude = FP4[(code & 7) as usize];
    if code & 8 != 0 { -magnitude } else { magnitude }
}

/// The FP8 E4M3 byte of `x`: nearest, ties to even, subnormals kept, saturating at 448
/// (infinities and NaN too), the sign kept (−0 is 0x80).
fn e4m3(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 31) as u8) << 7;
    let a = x.abs();
    let magnitude = if a.is_nan() || a >= 464.0 {
        0x7E
    } else if a < 1.0 / 64.0 {
        (a * 512.0).round_ties_even() as u8
    } else {
        let bits = a.to_bits();
        ((bits - (120 << 23) + 0x7_FFFF + ((bits >> 20) & 1)) >> 20) as u8
    };
    sign | magnitude
}

/// An E4M3 byte's value (0x7F is 480: mlx's E4M3 has no NaN).
fn e4m3_value(byte: u8) -> f32 {
    let (exponent, mantissa) = (i32::from(byte >> 3) & 15, f32::from(byte & 7));
    let magnitude = match exponent {
        0 => mantissa * pow2(-9),
        e => (1.0 + mantissa / 8.0) * pow2(e - 7),
    };
    if byte & 0x80 != 0 { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp4_rounds_ties_down_and_saturates() {
        let cases = [
            (0.25, 0),
            (0.26, 1),
            (0.75, 1),
            (1.75, 3),
            (2.5, 4),
            (3.5, 5),
            (5.0, 6),
            (5.1, 7),
            (100.0, 7),
            (-0.2, 0),
            (-0.0, 0),
            (-2.5, 12),
            (f32::NAN, 0),
            (f32::NEG_INFINITY, 0),
        ];
        for (q, code) in cases {
            assert_eq!(fp4(q), code, "{q}");
        }
        // The closed form is the table search wherever both apply.
        for i in 0..20_000 {
            let q = (i as f32 - 10_000.0) * 0.0523;
            assert_eq!(fp4(q), fp4_by_search(q), "{q}");
        }
    }

    #[test]
    fn e4m3_round_trips_and_saturates() {
        for byte in 0..=255u8 {
            if byte & 0x7F == 0x7F {
                continue; // 480, above the saturation point
            }
            assert_eq!(e4m3(e4m3_value(byte)), byte, "{byte:#x}");
        }
        assert_eq!(e4m3(456.0), 0x7E);
        assert_eq!(e4m3(f32::INFINITY), 0x7E);
        assert_eq!(e4m3(-1e9), 0xFE);
        assert_eq!(e4m3(-0.0), 0x80);
        assert_eq!(e4m3_value(0x7F), 480.0);
        // The spec's examples: −0.25, 0.75, −5 and 7.
        assert_eq!([e4m3(-0.25), e4m3(0.75), e4m3(-5.0), e4m3(7.0)], [0xA8, 0x34, 0xCA, 0x4E]);
    }

    #[test]
    fn e8m0_rounds_the_exponent_up() {
        assert_eq!(e8m0(1.0, DType::BF16), (127, 1.0));
        assert_eq!(e8m0(7.0 / 6.0, DType::F32), (128, 2.0));
        assert_eq!(e8m0(0.0, DType::BF16), (127, 1.0));
        // A group of amax 1e-40 (scale 1e-40 / 6): the exponent -135 wraps to byte 248.
        assert_eq!(e8m0(1e-40 / 6.0, DType::F32).0, 248);
        assert_eq!(e8m0(f32::NAN, DType::F32), (128, 0.0));
        assert_eq!(ceil_log2(f32::from_bits(1)), -149);
        assert_eq!(ceil_log2(f32::from_bits(3)), -147);
    }

    #[test]
    fn a_group_matches_mlx_on_the_spec_examples() {
        // bf16 group with amax 7 in mxfp4: scale byte 128; 6, 0.75, −5, 7 → 5, 1, 0xC, 5.
        let mut g = vec![0f32; 32];
        g[..4].copy_from_slice(&[6.0, 0.75, -5.0, 7.0]);
        let mut codes = vec![0u32; 32];
        assert_eq!(FpMode::Mxfp4.group(DType::BF16, &g, &mut codes), 128);
        assert_eq!(codes[..4], [5, 1, 0xC, 5]);
        // nvfp4: 7/6 → E4M3 1.125 (0x39); 6 → 7, −5 → 0xE, 7 → 7.
        let mut codes = vec![0u32; 16];
        assert_eq!(FpMode::Nvfp4.group(DType::BF16, &g[..16], &mut codes), 0x39);
        assert_eq!([codes[0], codes[2], codes[3]], [7, 0xE, 7]);
    }
}
