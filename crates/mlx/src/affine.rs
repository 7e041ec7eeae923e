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

/// `q` rounded to the nearest integer, ties to even, where that matters for a code: exact
/// for `|q| < 2^22` (adding 1.5 · 2^23 leaves no fraction bits, and the rounding of the sum
/// is the hardware's ties-to-even); beyond, a value of the same sign, which the clip to
/// `[0, 2^bits − 1]` sends where it sends `rint(q)`. NaN stays NaN. (A call to `rintf`
/// costs more than the whole quantization on x86-64's baseline.)
fn rint_for_clip(q: f32) -> f32 {
    (q + MAGIC) - MAGIC
}

/// [`Affine::pack`] for a width `B` that divides 32: each word holds `32 / B` whole codes.
pub(crate) fn pack_whole<const B: usize>(codes: &[u32], words: &mut [u32]) {
    for (word, codes) in words.iter_mut().zip(codes.chunks_exact(32 / B)) {
        *word = codes.iter().enumerate().fold(0, |w, (i, &c)| w | c << (i * B));
    }
}

/// Code `i` of a row packed `bits` to a code, lowest bits first (0 past the row's end).
pub(crate) fn code(packed: &[u32], i: usize, bits: u32) -> u32 {
    let at = i * bits as usize;
    let (word, shift) = (at / 32, (at % 32) as u32);
    let low = u64::from(packed.get(word).copied().unwrap_or(0));
    let high = u64::from(packed.get(word + 1).copied().unwrap_or(0));
    (((high << 32 | low) >> shift) & ((1u64 << bits) - 1)) as u32
}

/// 1.5 · 2^23: any whole number of magnitude below 2^22 added to it is exact, and sits
/// in the low bits of the sum.
const MAGIC: f32 = 12_582_912.0;

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

    /// The scale and bias of a group whose extremes are `lo` and `hi`.
    #[inline(always)]
    fn scale_bias(&self, lo: f32, hi: f32) -> (f32, f32) {
        let low_is_edge = lo.abs() > hi.abs();
        let magnitude = std_max((hi - lo) / self.top(), EPS);
        let scale = if low_is_edge { magnitude } else { -magnitude };
        let edge = if low_is_edge { lo } else { hi };
        let q0 = (edge / scale).round_ties_even();
        if q0 == 0.0 { (scale, 0.0) } else { (edge / q0, edge) }
    }

    /// One group's f32 scale and bias, and its codes into `codes`.
    #[inline(always)]
    fn group(&self, w: &[f32], codes: &mut [u32]) -> (f32, f32) {
        // Eight running extremes, folded after: the same result in any order, as NaNs are
        // skipped and the sign of a zero extreme changes nothing below.
        let (mut lows, mut highs) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
        for run in w.chunks_exact(8) {
            for ((lo, hi), &x) in lows.iter_mut().zip(&mut highs).zip(run) {
                *hi = std_max(*hi, x);
                *lo = std_min(*lo, x);
            }
        }
        let lo = lows.into_iter().fold(f32::INFINITY, std_min);
        let hi = highs.into_iter().fold(f32::NEG_INFINITY, std_max);
        let (scale, bias) = self.scale_bias(lo, hi);
        let top = self.top();
        for (c, &x) in codes.iter_mut().zip(w) {
            let q = rint_for_clip((x - bias) / scale);
            // Clipped to [0, top], NaN to 0 (as `as u32` takes it); the whole number read
            // from the bits of q + 1.5 · 2^23, which vectorizes where a conversion does not.
            let q = if q >= 0.0 { q } else { 0.0 };
            let q = if q < top { q } else { top };
            *c = (q + MAGIC).to_bits() - MAGIC.to_bits();
        }
        (scale, bias)
    }

    /// Quantizes one row: `packed` gets [`Affine::words`] words, `scales` and `biases`
    /// one f32 per group (round them to the tensor's dtype to store them). The same code
    /// is compiled for AVX2 and used where the processor has it: wider vectors, the same
    /// IEEE operations, so the same bits (the tests hold the plain build to mlx's loop).
    pub fn quantize_row(
        &self,
        w: &[f32],
        packed: &mut [u32],
        scales: &mut [f32],
        biases: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2, checked above.
            unsafe { self.quantize_row_avx2(w, packed, scales, biases) };
            return;
        }
        self.quantize_row_plain(w, packed, scales, biases);
    }

    /// [`Affine::quantize_row`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn quantize_row_avx2(
        &self,
        w: &[f32],
        packed: &mut [u32],
        scales: &mut [f32],
        biases: &mut [f32],
    ) {
        self.quantize_row_plain(w, packed, scales, biases);
    }

    /// [`Affine::quantize_row`] for any processor.
    #[inline(always)]
    fn quantize_row_plain(
        &self,
        w: &[f32],
        packed: &mut [u32],
        scales: &mut [f32],
        biases: &mut [f32],
    ) {
        let mut codes = [0u32; GROUP_SIZES[2]];
        let codes = &mut codes[..self.group_size];
        // A group's codes fill whole words (32 · bits is a multiple of 32 for every size).
        let words = self.group_size * self.bits as usize / 32;
        let groups = w.chunks_exact(self.group_size).zip(packed.chunks_exact_mut(words));
        for ((group, words), (scale, bias)) in groups.zip(scales.iter_mut().zip(biases.iter_mut()))
        {
            (*scale, *bias) = self.group(group, codes);
            self.pack(codes, words);
        }
    }

    /// Packs `codes` lowest bits first into `words`.
    #[inline(always)]
    fn pack(&self, codes: &[u32], words: &mut [u32]) {
        match self.bits {
            2 => pack_whole::<2>(codes, words),
            4 => pack_whole::<4>(codes, words),
            8 => pack_whole::<8>(codes, words),
            _ => self.pack_straddling(codes, words),
        }
    }

    /// [`Affine::pack`] for widths whose codes may straddle two words.
    fn pack_straddling(&self, codes: &[u32], words: &mut [u32]) {
        let (mut acc, mut filled) = (0u64, 0u32);
        let mut out = words.iter_mut();
        for &code in codes {
            acc |= u64::from(code) << filled;
            filled += self.bits;
            if filled >= 32 {
                if let Some(w) = out.next() {
                    *w = acc as u32;
                }
                acc >>= 32;
                filled -= 32;
            }
        }
    }

    /// Code `i` of a packed row.
    fn code(&self, packed: &[u32], i: usize) -> u32 {
        code(packed, i, self.bits)
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
            let (half, _) = packed.split_at_mut(a.words(32));
            a.pack(&codes[..32], half);
            a.pack(&codes[32..], &mut packed[a.words(32)..]);
            let back: Vec<u32> = (0..64).map(|i| a.code(&packed, i)).collect();
            assert_eq!(back, codes, "{bits} bits");
        }
    }

    /// The codes by the definition: `rint`, then the clip.
    fn clipped_rint(q: f32, top: f32) -> u32 {
        std_min(std_max(q.round_ties_even(), 0.0), top) as u32
    }

    /// A group's scale, bias and codes as mlx's loop writes them, one value at a time.
    fn plain_group(a: &Affine, w: &[f32]) -> (f32, f32, Vec<u32>) {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &x in w {
            hi = std_max(hi, x);
            lo = std_min(lo, x);
        }
        let (scale, bias) = a.scale_bias(lo, hi);
        let codes = w.iter().map(|&x| clipped_rint((x - bias) / scale, a.top())).collect();
        (scale, bias, codes)
    }

    #[test]
    fn the_fast_rounding_gives_rints_codes() {
        let mut q: Vec<f32> = vec![0.5, 1.5, 2.5, -0.5, -0.0, 254.5, 255.5, 4194303.5, 4194304.5];
        q.extend([8388609.0, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-45]);
        // Every 9973rd float, and every half-integer tie up to 300.
        q.extend((0..u32::MAX / 9973).map(|i| f32::from_bits(i * 9973)));
        q.extend((0..600).map(|i| i as f32 * 0.5));
        for bits in BITS {
            let top = ((1u32 << bits) - 1) as f32;
            for &q in &q {
                let fast = std_min(std_max(rint_for_clip(q), 0.0), top) as u32;
                assert_eq!(fast, clipped_rint(q, top), "{q:e} at {bits} bits");
            }
        }
    }

    #[test]
    fn rows_quantize_as_the_definition_says() {
        // Values with exact ties, a constant group, and wide ranges.
        let w: Vec<f32> = (0..512)
            .map(|i: u32| match i / 128 {
                0 => (i as f32 - 64.0) * 0.125,
                1 => 3.0,
                _ => f32::from_bits(i.wrapping_mul(2_654_435_761) >> 3 | 0x3c00_0000) - 0.5,
            })
            .collect();
        // A NaN (skipped by the extremes, code 0) and an infinite group.
        let mut w = w;
        w[300] = f32::from_bits(0x7fa0_0001);
        w[420] = f32::INFINITY;
        for bits in BITS {
            for g in GROUP_SIZES {
                let a = Affine::new(bits, g).unwrap();
                let (words, groups) = (a.words(512), a.groups(512));
                let mut packed = vec![0u32; words];
                let (mut scales, mut biases) = (vec![0f32; groups], vec![0f32; groups]);
                a.quantize_row_plain(&w, &mut packed, &mut scales, &mut biases);
                let mut fast = (vec![0u32; words], vec![0f32; groups], vec![0f32; groups]);
                a.quantize_row(&w, &mut fast.0, &mut fast.1, &mut fast.2);
                let raw = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                assert_eq!(fast.0, packed, "{bits}/{g}: the dispatched build's codes");
                assert_eq!(raw(&fast.1), raw(&scales), "{bits}/{g}: scales");
                assert_eq!(raw(&fast.2), raw(&biases), "{bits}/{g}: biases");
                for (k, group) in w.chunks_exact(g).enumerate() {
                    let (scale, bias, codes) = plain_group(&a, group);
                    let bits_of = |s: f32, b: f32| (s.to_bits(), b.to_bits());
                    assert_eq!(bits_of(scales[k], biases[k]), bits_of(scale, bias), "{bits}/{g}");
                    for (i, &want) in codes.iter().enumerate() {
                        assert_eq!(a.code(&packed, k * g + i), want, "{bits}/{g} value {i}");
                    }
                }
            }
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
