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
        _ => {
            let f = block_quantizer(ty);
            for (o, b) in out.chunks_exact_mut(size).zip(x.chunks_exact(block)) {
                f(b, o);
            }
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

type Quantizer = fn(&[f32], &mut [u8]);
type Dequantizer = fn(&[u8], &mut [f32]);

fn block_quantizer(ty: GgmlType) -> Quantizer {
    match ty {
        GgmlType::Q4_0 => legacy::quantize_q4_0,
        GgmlType::Q4_1 => legacy::quantize_q4_1,
        GgmlType::Q5_0 => legacy::quantize_q5_0,
        GgmlType::Q5_1 => legacy::quantize_q5_1,
        GgmlType::Q8_0 => legacy::quantize_q8_0,
        GgmlType::Q8_1 => legacy::quantize_q8_1,
        GgmlType::Q2K => kquants::quantize_q2_k,
        GgmlType::Q3K => kquants::quantize_q3_k,
        GgmlType::Q4K => kquants::quantize_q4_k,
        GgmlType::Q5K => kquants::quantize_q5_k,
        GgmlType::Q6K => kquants::quantize_q6_k,
        GgmlType::Q8K => kquants::quantize_q8_k,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            unreachable!("float types are not block-quantized")
        }
    }
}

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
