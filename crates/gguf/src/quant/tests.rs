//! Quantization round trips against the error bounds of llama.cpp's
//! `tests/test-quantize-fns.cpp`, and hand-checked blocks.

use super::*;

/// llama.cpp's synthetic test data: `0.1 + 2 cos(i + offset)`.
fn test_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.1 + 2.0 * (i as f32 + offset).cos()).collect()
}

/// llama.cpp's error metric: `sqrt(sum (a - b)^2) / n`.
fn total_error(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (sum.sqrt() / a.len() as f64) as f32
}

#[test]
fn round_trip_errors_are_within_llama_cpp_bounds() {
    let x = test_data(0.0, 32 * 128);
    for ty in GgmlType::ALL {
        let bound = match ty {
            GgmlType::Q2K => 0.0075,
            GgmlType::Q3K => 0.004,
            _ => 0.002,
        };
        let mut bytes = vec![0u8; ty.bytes_for(x.len() as u64).unwrap() as usize];
        quantize(ty, &x, &mut bytes);
        let mut back = vec![0f32; x.len()];
        dequantize(ty, &bytes, &mut back);
        let error = total_error(&x, &back);
        assert!(error < bound, "{ty}: error {error} over {bound}");
    }
}

#[test]
fn float_types_are_exact_or_nearest() {
    let x = [1.0f32, -2.5, 0.1, 65504.0];
    let mut bytes = vec![0u8; 16];
    quantize(GgmlType::F32, &x, &mut bytes);
    let mut back = [0f32; 4];
    dequantize(GgmlType::F32, &bytes, &mut back);
    assert_eq!(back, x);
    assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8), NanPolicy::KeepPayload), 0x3F80, "ties to even");
    assert_eq!(
        round_to_bf16(f32::from_bits(0x7F80_0001), NanPolicy::KeepPayload),
        0x7FC0,
        "NaN stays NaN"
    );
}

#[test]
fn q8_0_block_by_hand() {
    // amax 127 gives d = 1: every value rounds half away from zero.
    let mut x = [0f32; 32];
    x[0] = 127.0;
    x[1] = -2.5;
    x[2] = 2.5;
    x[3] = 0.49;
    let mut b = [0u8; 34];
    quantize(GgmlType::Q8_0, &x, &mut b);
    assert_eq!(&b[..2], &half::f16::from_f32(1.0).to_le_bytes());
    assert_eq!(b[2] as i8, 127);
    assert_eq!(b[3] as i8, -3);
    assert_eq!(b[4] as i8, 3);
    assert_eq!(b[5] as i8, 0);
}

#[test]
fn q4_0_block_by_hand() {
    // max -8 gives d = 1, so q = trunc(x + 8.5) clamped to 15.
    let mut x = [0f32; 32];
    x[0] = -8.0;
    x[1] = 7.9;
    x[16] = 3.2;
    let mut b = [0u8; 18];
    quantize(GgmlType::Q4_0, &x, &mut b);
    assert_eq!(half::f16::from_le_bytes([b[0], b[1]]).to_f32(), 1.0);
    assert_eq!(b[2] & 0x0F, 0, "-8 -> 0");
    assert_eq!(b[2] >> 4, 11, "element 16: 3.2 + 8.5 -> 11");
    assert_eq!(b[3] & 0x0F, 15, "7.9 + 8.5 = 16.4 clamps to 15");
}

#[test]
fn all_zero_blocks_stay_zero() {
    let x = vec![0f32; 256];
    for ty in GgmlType::ALL {
        let mut bytes = vec![0xAAu8; ty.bytes_for(256).unwrap() as usize];
        quantize(ty, &x, &mut bytes);
        let mut back = vec![1f32; 256];
        dequantize(ty, &bytes, &mut back);
        assert!(back.iter().all(|v| *v == 0.0), "{ty}");
    }
}

#[test]
fn rescaled_blocks_decode_to_the_scaled_values() {
    let x = test_data(0.5, 256 * 8);
    let mut scaled_types = 0;
    for ty in GgmlType::ALL {
        let mut bytes = vec![0u8; ty.bytes_for(x.len() as u64).unwrap() as usize];
        quantize(ty, &x, &mut bytes);
        let mut before = vec![0f32; x.len()];
        dequantize(ty, &bytes, &mut before);
        let mut half = bytes.clone();
        if !crate::blocks::rescale(ty, &mut half, 0.5) {
            let unscaled = [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_1];
            assert!(unscaled.contains(&ty) || ty == GgmlType::Q8K, "{ty}");
            continue;
        }
        scaled_types += 1;
        let mut after = vec![0f32; x.len()];
        dequantize(ty, &half, &mut after);
        // A power of two scales every f16 field exactly, so every value.
        let want: Vec<f32> = before.iter().map(|v| v * 0.5).collect();
        assert_eq!(after, want, "{ty}");
        // Another scale rounds each f16 field once (relative error 2^-11): off by at most
        // 0.6 · 2^-11 · (|d·q| + |m|), and both terms are below 4.2 on this data.
        let mut other = bytes.clone();
        assert!(crate::blocks::rescale(ty, &mut other, 0.6));
        dequantize(ty, &other, &mut after);
        for (a, b) in after.iter().zip(&before) {
            assert!((a - 0.6 * b).abs() <= 0.6 * 2f32.powi(-11) * 8.4, "{ty}: {a} {b}");
        }
    }
    assert_eq!(scaled_types, 10, "Q4_0…Q8_0 and Q2_K…Q6_K");
}

#[test]
fn every_instruction_set_quantizes_to_the_same_bytes() {
    let isas: Vec<Isa> = [Isa::Plain, Isa::best()].into_iter().collect();
    // Smooth data, and data with a spread of magnitudes, signs and exact ties.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 10f32.powi((state % 7) as i32 - 3)
    };
    let rough: Vec<f32> = (0..256 * 16).map(|i| if i % 37 == 0 { 0.5 } else { noise() }).collect();
    for x in [test_data(0.3, 256 * 16), rough] {
        for ty in GgmlType::ALL.into_iter().filter(|t| t.block_size() > 1) {
            let size = ty.bytes_for(x.len() as u64).unwrap() as usize;
            let outputs: Vec<Vec<u8>> = isas
                .iter()
                .map(|&isa| {
                    let mut bytes = vec![0u8; size];
                    quantize_blocks(ty, &x, &mut bytes, isa);
                    bytes
                })
                .collect();
            assert!(outputs.windows(2).all(|w| w[0] == w[1]), "{ty}: {isas:?} differ");
        }
    }
}
