//! Element types of stored tensors, their names in safetensors and mergekit, and the
//! conversions between them and `f32`, rounding exactly as PyTorch does.

use std::fmt;

/// A floating-point element type amalgam can read, compute in or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 => 8,
        }
    }

    /// The name in a safetensors header (`"BF16"`).
    pub const fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
        }
    }

    /// The name mergekit configs and `config.json` use (`"bfloat16"`).
    pub const fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
        }
    }

    /// Parses a safetensors header dtype; `None` for types amalgam does not handle.
    pub fn from_safetensors(dtype: safetensors::Dtype) -> Option<DType> {
        match dtype {
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F64 => Some(DType::F64),
            _ => None,
        }
    }

    /// Parses a mergekit dtype name: `float32`, `float16`, `bfloat16`, `float64`, with an
    /// optional `torch.` prefix, as mergekit 0.1.5 accepts them.
    pub fn from_torch_name(name: &str) -> Option<DType> {
        match name.strip_prefix("torch.").unwrap_or(name) {
            "float32" => Some(DType::F32),
            "float16" => Some(DType::F16),
            "bfloat16" => Some(DType::BF16),
            "float64" => Some(DType::F64),
            _ => None,
        }
    }

    /// The type PyTorch promotes two floating types to (`bf16` with `f16` gives `f32`).
    pub fn promote(self, other: DType) -> DType {
        use DType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (F64, _) | (_, F64) => F64,
            _ => F32,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.torch_name())
    }
}

/// What rounding to bfloat16 makes of a NaN: the one place the two bf16 writers differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NanPolicy {
    /// Every NaN becomes the canonical quiet NaN `0x7FC0`, as torch's `c10::BFloat16`
    /// rounds: merges, whose bytes are mergekit's.
    Canonical,
    /// A NaN keeps its sign and top payload bits and is made quiet, as ggml's
    /// `fp32 -> bf16` does: GGUF, whose bytes are llama.cpp's.
    KeepPayload,
}

/// Rounds an `f32` to bfloat16 bits, nearest-even, NaN as `nan` says.
#[inline(always)]
pub fn round_to_bf16(x: f32, nan: NanPolicy) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return match nan {
            NanPolicy::Canonical => 0x7FC0,
            NanPolicy::KeepPayload => ((bits >> 16) | 0x40) as u16,
        };
    }
    let bias = ((bits >> 16) & 1) + 0x7FFF;
    (bits.wrapping_add(bias) >> 16) as u16
}

/// Rounds an `f32` to bfloat16 bits as torch does (nearest-even, canonical NaN).
#[inline(always)]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    round_to_bf16(x, NanPolicy::Canonical)
}

/// Widens bfloat16 bits to `f32` (exact).
#[inline(always)]
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Rounds an `f32` to IEEE half bits, nearest-even.
#[inline(always)]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// Widens IEEE half bits to `f32` (exact).
#[inline(always)]
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Rounds `x` to `dtype` and back: the value a tensor of that dtype would hold.
#[inline(always)]
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F32 | DType::F64 => x,
        DType::F16 => f16_bits_to_f32(f32_to_f16_bits(x)),
        DType::BF16 => bf16_bits_to_f32(f32_to_bf16_bits(x)),
    }
}

/// Rounds every value to `dtype` (dispatching once, not per element).
pub fn round_slice(dtype: DType, values: &mut [f32]) {
    match dtype {
        DType::F32 | DType::F64 => {}
        DType::F16 => values.iter_mut().for_each(|v| *v = round_to(DType::F16, *v)),
        DType::BF16 => values.iter_mut().for_each(|v| *v = round_to(DType::BF16, *v)),
    }
}

/// Decodes little-endian elements of `dtype` from `bytes` into `out` (one `f32` per
/// element). `bytes.len()` must be `out.len() * dtype.size()`.
pub fn decode_f32(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), out.len() * dtype.size());
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        DType::F16 => decode_f16(bytes, out),
        DType::F64 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                *o = f64::from_le_bytes(a) as f32;
            }
        }
    }
}

/// Widens little-endian halves in runs, each through `half`'s slice conversion (F16C
/// where the CPU has it, detected once per run): the per-element conversion calls the
/// detection each time, and widening a row cost more than multiplying it by a batch.
fn decode_f16(bytes: &[u8], out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    const RUN: usize = 64;
    let mut halves = [half::f16::ZERO; RUN];
    for (o, b) in out.chunks_mut(RUN).zip(bytes.chunks(2 * RUN)) {
        let n = o.len().min(b.len() / 2);
        for (h, b) in halves.iter_mut().zip(b.chunks_exact(2)) {
            *h = half::f16::from_le_bytes([b[0], b[1]]);
        }
        if let (Some(h), Some(o)) = (halves.get(..n), o.get_mut(..n)) {
            h.convert_to_f32_slice(o);
        }
    }
}

/// Encodes `values` as little-endian `dtype` elements into `out`, rounding to nearest-even.
/// `out.len()` must be `values.len() * dtype.size()`.
pub fn encode_f32(dtype: DType, values: &[f32], out: &mut [u8]) {
    debug_assert_eq!(out.len(), values.len() * dtype.size());
    match dtype {
        DType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(values) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        DType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
            }
        }
        DType::F64 => {
            for (o, v) in out.chunks_exact_mut(8).zip(values) {
                o.copy_from_slice(&f64::from(*v).to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is exactly halfway between two bf16 values; the even one is 1.0.
        assert_eq!(f32_to_bf16_bits(1.0 + 2f32.powi(-8)), 0x3F80);
        // Just above halfway rounds up.
        assert_eq!(f32_to_bf16_bits(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3F81);
        // 1 + 3*2^-8 is halfway between 0x3F81 and 0x3F82; even is 0x3F82.
        assert_eq!(f32_to_bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(f32_to_bf16_bits(f32::NAN), 0x7FC0);
        // The two NaN policies, on a negative NaN with a payload.
        let nan = f32::from_bits(0xFF81_2345);
        assert_eq!(round_to_bf16(nan, NanPolicy::Canonical), 0x7FC0, "torch");
        assert_eq!(round_to_bf16(nan, NanPolicy::KeepPayload), 0xFFC1, "ggml");
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7F80);
    }

    #[test]
    fn round_trips_are_exact_for_representable_values() {
        for bits in [0u16, 0x3F80, 0xBF80, 0x0001, 0x7F7F, 0x8001] {
            assert_eq!(f32_to_bf16_bits(bf16_bits_to_f32(bits)), bits);
            assert_eq!(f32_to_f16_bits(f16_bits_to_f32(bits & 0x7BFF)), bits & 0x7BFF);
        }
    }

    #[test]
    fn decode_encode_round_trip() {
        let values = [1.5f32, -2.25, 0.0, 65504.0, 3.0e-5];
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            let mut bytes = vec![0u8; values.len() * dtype.size()];
            encode_f32(dtype, &values, &mut bytes);
            let mut back = [0f32; 5];
            decode_f32(dtype, &bytes, &mut back);
            for (v, b) in values.iter().zip(back) {
                assert_eq!(round_to(dtype, *v), b, "{dtype}");
            }
        }
    }

    #[test]
    fn halves_decode_in_runs_as_one_by_one() {
        // Every half, NaNs and subnormals included; an odd count leaves a short last run.
        let bits: Vec<u16> = (0..=u16::MAX).chain([0x7E01, 0xFC01, 0x0001]).collect();
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let mut out = vec![0f32; bits.len()];
        decode_f32(DType::F16, &bytes, &mut out);
        for (&b, o) in bits.iter().zip(&out) {
            assert_eq!(o.to_bits(), f16_bits_to_f32(b).to_bits(), "{b:#06x}");
        }
    }

    #[test]
    fn names_and_promotion() {
        assert_eq!(DType::from_torch_name("torch.bfloat16"), Some(DType::BF16));
        assert_eq!(DType::from_torch_name("float8"), None);
        assert_eq!(DType::BF16.promote(DType::F16), DType::F32);
        assert_eq!(DType::BF16.promote(DType::BF16), DType::BF16);
        assert_eq!(DType::F16.promote(DType::F64), DType::F64);
    }
}
