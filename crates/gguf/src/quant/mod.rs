//! Quantization and dequantization of whole rows for every block type, dispatching to the
//! per-block ports of ggml's reference quantizers. One definition of each block, used by
//! the GGUF writer and (later) by inference.

mod common;
mod kquants;
mod legacy;

use amalgam_tensors::DType;
use amalgam_tensors::dtype::{NanPolicy, decode_f32, encode_f32, round_to_bf16};

use crate::ggml_type::GgmlType;

pub use common::nearest_int;

/// Quantizes `x` (a whole number of blocks) into `out` (exactly the type's bytes).
///
/// # Panics
/// If the lengths do not match the type; callers size both from the tensor shape.
pub fn quantize(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    let (block, size) = (ty.block_size(), ty.type_size());
    assert!(
        x.len().is_multiple_of(block) && out.len() == x.len() / block * size,
        "quantize {ty}: bad lengths"
    );
    match ty {
        GgmlType::F32 => encode_f32(DType::F32, x, out),
        GgmlType::F16 => encode_f32(DType::F16, x, out),
        // ggml's own bf16 conversion (its NaN handling differs from amalgam-tensors').
        GgmlType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&round_to_bf16(*v, NanPolicy::KeepPayload).to_le_bytes());
            }
        }
        _ => quantize_blocks(ty, x, out, Isa::best()),
    }
}

/// The instruction sets the block quantizers are compiled for: one source, built twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// The x86-64 baseline (or any other target).
    Plain,
    /// AVX2 and FMA: the compiler vectorizes wider. The same bits, since Rust never fuses a
    /// multiply and an add, nor reorders float operations, on its own.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The widest this CPU runs.
    pub(crate) fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
        Isa::Plain
    }
}

/// Quantizes every block of `x` with `ty`'s block quantizer, compiled for `isa`.
pub(crate) fn quantize_blocks(ty: GgmlType, x: &[f32], out: &mut [u8], isa: Isa) {
    let (block, size) = (ty.block_size(), ty.type_size());
    // Each quantizer gets its own loop per instruction set, calling it directly so that
    // it is inlined and compiled for that set.
    macro_rules! blocks {
        ($quantize:path) => {{
            #[inline(always)]
            fn plain(block: usize, size: usize, x: &[f32], out: &mut [u8]) {
                for (o, b) in out.chunks_exact_mut(size).zip(x.chunks_exact(block)) {
                    $quantize(b, o);
                }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2(block: usize, size: usize, x: &[f32], out: &mut [u8]) {
                plain(block, size, x, out);
            }
            match isa {
                Isa::Plain => plain(block, size, x, out),
                // SAFETY: `Isa::Avx2` is only chosen (by `Isa::best`, or a test that
                // checked the same) where the CPU has AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2(block, size, x, out) },
            }
        }};
    }
    match ty {
        GgmlType::Q4_0 => blocks!(legacy::quantize_q4_0),
        GgmlType::Q4_1 => blocks!(legacy::quantize_q4_1),
        GgmlType::Q5_0 => blocks!(legacy::quantize_q5_0),
        GgmlType::Q5_1 => blocks!(legacy::quantize_q5_1),
        GgmlType::Q8_0 => blocks!(legacy::quantize_q8_0),
        GgmlType::Q8_1 => blocks!(legacy::quantize_q8_1),
        GgmlType::Q2K => blocks!(kquants::quantize_q2_k),
        GgmlType::Q3K => blocks!(kquants::quantize_q3_k),
        GgmlType::Q4K => blocks!(kquants::quantize_q4_k),
        GgmlType::Q5K => blocks!(kquants::quantize_q5_k),
        GgmlType::Q6K => blocks!(kquants::quantize_q6_k),
        GgmlType::Q8K => blocks!(kquants::quantize_q8_k),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            unreachable!("float types are not block-quantized")
        }
    }
}

/// Dequantizes `bytes` (a whole number of blocks) into `y`.
///
/// # Panics
/// If the lengths do not match the type.
pub fn dequantize(ty: GgmlType, bytes: &[u8], y: &mut [f32]) {
    let (block, size) = (ty.block_size(), ty.type_size());
    assert!(
        y.len().is_multiple_of(block) && bytes.len() == y.len() / block * size,
        "dequantize {ty}: bad lengths"
    );
    match ty {
        GgmlType::F32 => decode_f32(DType::F32, bytes, y),
        GgmlType::F16 => decode_f32(DType::F16, bytes, y),
        GgmlType::BF16 => decode_f32(DType::BF16, bytes, y),
        _ => {
            let f = block_dequantizer(ty);
            for (b, v) in bytes.chunks_exact(size).zip(y.chunks_exact_mut(block)) {
                f(b, v);
            }
        }
    }
}

type Dequantizer = fn(&[u8], &mut [f32]);

fn block_dequantizer(ty: GgmlType) -> Dequantizer {
    match ty {
        GgmlType::Q4_0 => legacy::dequantize_q4_0,
        GgmlType::Q4_1 => legacy::dequantize_q4_1,
        GgmlType::Q5_0 => legacy::dequantize_q5_0,
        GgmlType::Q5_1 => legacy::dequantize_q5_1,
        GgmlType::Q8_0 => legacy::dequantize_q8_0,
        GgmlType::Q8_1 => legacy::dequantize_q8_1,
        GgmlType::Q2K => kquants::dequantize_q2_k,
        GgmlType::Q3K => kquants::dequantize_q3_k,
        GgmlType::Q4K => kquants::dequantize_q4_k,
        GgmlType::Q5K => kquants::dequantize_q5_k,
        GgmlType::Q6K => kquants::dequantize_q6_k,
        GgmlType::Q8K => kquants::dequantize_q8_k,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            unreachable!("float types are not block-quantized")
        }
    }
}

#[cfg(test)]
mod tests;
