//! mlx's affine quantization, as its CPU backend computes it (`docs/mlx-format.md` §1–2,
//! §5): per group of `group_size` consecutive values of a row, a scale and a bias found in
//! f32 — the bias is the value of larger magnitude, the scale chosen so that it lands on a
//! whole code — and codes `rint((w − bias) / scale)` clipped to `[0, 2^bits − 1]`, packed
//! lowest bits first into one little-endian bit stream of u32 words per row. The codes
//! come from the f32 scale and bias; the stored ones are rounded to the tensor's dtype.

use crate::error::{MlxError, Result};

/// The bit widths mlx quantizes to.
pub const BITS: [u32; 6] = [2, 3, 4, 5, 6, 8];
/// The group sizes mlx accepts.
pub const GROUP_SIZES: [usize; 3] = [32, 64, 128];
/// The smallest scale magnitude (mlx's `eps`).
const EPS: f32 = 1e-7;

/// An affine quantization's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affine {
    bits: u32,
    group_size: usize,
}

/// C++'s `std::max`: `b` only where `a < b`, so a NaN `b` is skipped and `max(+0, −0)`
/// is `+0`.
fn std_max(a: f32, b: f32) -> f32 {
    if a < b { b } else { a }
}

/// C++'s `std::min`: `b` only where `b < a`.
fn std_min(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

impl Affine {
    /// The parameters, if mlx accepts them.
    pub fn new(bits: u32, group_size: usize) -> Result<Affine> {
        if !BITS.contains(&bits) {
            return Err(MlxError::Bits(bits));
        }
        if !GROUP_SIZES.contains(&group_size) {
            return Err(MlxError::GroupSize(group_size));
        }
        Ok(Affine { bits, group_size })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    pub fn group_size(&self) -> usize {
        self.group_size
    }

    /// Whether rows of `cols` values split into whole groups.
    pub fn fits(&self, cols: usize) -> bool {
        cols > 0 && cols.is_multiple_of(self.group_size)
    }

    /// The u32 words of a packed row of `cols` values (`cols` a whole number of groups).
    pub fn words(&self, cols: usize) -> usize {
        cols * self.bits as usize / 32
    }

    /// The groups of a row of `cols` values.
    pub fn groups(&self, cols: usize) -> usize {
        cols / self.group_size
    }

    /// The largest code.
    fn top(&self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }

    /// One group's f32 scale and bias, and its codes into `codes`.
    fn group(&self, w: &[f32], codes: &mut [u32]) -> (f32, f32) {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &x in w {
            hi = std_max(hi, x);
            lo = std_min(lo, x);
        }
        let low_is_edge = lo.abs() > hi.abs();
        let magnitude = std_max((hi - lo) / self.top(), EPS);
        let mut scale = if low_is_edge { magnitude } else { -magnitude };
        let edge = if low_is_edge { lo } else { hi };
        let q0 = (edge / scale).round_ties_even();
        let mut bias = 0.0;
        if q0 != 0.0 {
            scale = edge / q0;
            bias = edge;
        }
        for (c, &x) in codes.iter_mut().zip(w) {
            let q = ((x - bias) / scale).round_ties_even();
            *c = std_min(std_max(q, 0.0), self.top()) as u32;
        }
        (scale, bias)
    }

    /// Quantizes one row: `packed` gets [`Affine::words`] words, `scales` and `biases`
    /// one f32 per group (round them to the tensor's dtype to store them).
    pub fn quantize_row(
        &self,
        w: &[f32],
        packed: &mut [u32],
        scales: &mut [f32],
        biases: &mut [f32],
    ) {
        let mut codes = vec![0u32; self.group_size];
        packed.fill(0);
        let groups = w.chunks_exact(self.group_size).zip(scales.iter_mut().zip(biases.iter_mut()));
        for (g, (group, (scale, bias))) in groups.enumerate() {
            (*scale, *bias) = self.group(group, &mut codes);
            for (i, &code) in codes.iter().enumerate() {
                self.put(packed, g * self.group_size + i, code);
            }
        }
    }

    /// Writes code `i` of a row at bits `i · bits..` of its stream.
    fn put(&self, packed: &mut [u32], i: usize, code: u32) {
        let at = i * self.bits as usize;
        let (word, shift) = (at / 32, (at % 32) as u32);
        if let Some(w) = packed.get_mut(word) {
            *w |= code << shift;
        }
        if shift + self.bits > 32
            && let Some(w) = packed.get_mut(word + 1)
        {
            *w |= code >> (32 - shift);
        }
    }

    /// Code `i` of a packed row.
    fn code(&self, packed: &[u32], i: usize) -> u32 {
        let at = i * self.bits as usize;
        let (word, shift) = (at / 32, (at % 32) as u32);
        let low = u64::from(packed.get(word).copied().unwrap_or(0));
        let high = u64::from(packed.get(word + 1).copied().unwrap_or(0));
        (((high << 32 | low) >> shift) & ((1u64 << self.bits) - 1)) as u32
    }

    /// Dequantizes one row as mlx does: `round(round(code · scale) + bias)`, `round`
    /// being the rounding to the scales' dtype (`scales` and `biases` hold the stored
    /// values, widened).
    pub fn dequantize_row(
        &self,
        packed: &[u32],
        scales: &[f32],
        biases: &[f32],
        round: impl Fn(f32) -> f32,
        out: &mut [f32],
    ) {
        for (g, (out, (&scale, &bias))) in
            out.chunks_exact_mut(self.group_size).zip(scales.iter().zip(biases)).enumerate()
        {
            for (i, o) in out.iter_mut().enumerate() {
                let code = self.code(packed, g * self.group_size + i) as f32;
                *o = round(round(code * scale) + bias);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_the_bit_stream() {
        for bits in BITS {
            let a = Affine::new(bits, 32).unwrap();
            let codes: Vec<u32> = (0..64u32)
                .map(|i| i.wrapping_mul(2_654_435_761) >> 7 & ((1 << bits) - 1))
                .collect();
            let mut packed = vec![0u32; a.words(64)];
            for (i, &c) in codes.iter().enumerate() {
                a.put(&mut packed, i, c);
            }
            let back: Vec<u32> = (0..64).map(|i| a.code(&packed, i)).collect();
            assert_eq!(back, codes, "{bits} bits");
        }
    }

    #[test]
    fn the_edge_value_is_the_bias_and_lands_on_a_whole_code() {
        let a = Affine::new(4, 32).unwrap();
        let w: Vec<f32> = (0..32).map(|i| i as f32 * 0.25 - 7.0).collect();
        let mut codes = vec![0u32; 32];
        let (scale, bias) = a.group(&w, &mut codes);
        // |min| = 7 > |max| = 0.75: the minimum is the edge, the scale positive.
        assert_eq!(bias, -7.0);
        assert!(scale > 0.0);
        assert_eq!(codes[0], 0);
        // A group led by its maximum has a negative scale.
        let (scale, bias) = a.group(&w.iter().map(|x| -x).collect::<Vec<_>>(), &mut codes);
        assert_eq!((bias, scale < 0.0), (7.0, true));
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(matches!(Affine::new(7, 64), Err(MlxError::Bits(7))));
        assert!(matches!(Affine::new(4, 48), Err(MlxError::GroupSize(48))));
    }
}
