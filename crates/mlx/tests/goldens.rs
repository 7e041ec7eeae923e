//! The quantizer against `mlx_lm.convert` (mlx 0.32.4, mlx-lm 0.32.2, CPU; made by
//! `scripts/make-mlx-goldens` from `tests/data/gguf/tiny-kq`): every tensor it writes for
//! 4 and 8 bits at group size 64, 3 bits at 32 and `mixed_4_6`, and the 4-bit model
//! dequantized back, has the SHA-256 of the bytes mlx wrote.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use amalgam_mlx::{Affine, Recipe};
use amalgam_tensors::dtype::{NanPolicy, bf16_bits_to_f32, round_to_bf16};
use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data").join(path)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Each tensor's SHA-256 in a golden's `model.safetensors`.
fn golden(name: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(data(&format!("mlx/{name}/tensors.json"))).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let tensors = json["model.safetensors"]["tensors"].as_object().unwrap();
    tensors.iter().map(|(k, v)| (k.clone(), v["sha256"].as_str().unwrap().to_owned())).collect()
}

/// The source model's bf16 tensors as f32 rows: name → (values, rows, cols).
fn source() -> HashMap<String, (Vec<f32>, usize, usize)> {
    let bytes = std::fs::read(data("gguf/tiny-kq/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f32> = view
                .data()
                .chunks_exact(2)
                .map(|b| bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect();
            let cols = *view.shape().last().unwrap();
            (name, (values.clone(), values.len() / cols, cols))
        })
        .collect()
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| round_to_bf16(v, NanPolicy::Canonical).to_le_bytes()).collect()
}

/// A matrix quantized row by row: packed words, scales and biases (f32, unrounded).
struct Quantized {
    packed: Vec<u32>,
    scales: Vec<f32>,
    biases: Vec<f32>,
}

fn quantize(a: Affine, (values, rows, cols): &(Vec<f32>, usize, usize)) -> Quantized {
    let (words, groups) = (a.words(*cols), a.groups(*cols));
    let mut q = Quantized {
        packed: vec![0; rows * words],
        scales: vec![0.0; rows * groups],
        biases: vec![0.0; rows * groups],
    };
    for r in 0..*rows {
        a.quantize_row(
            &values[r * cols..(r + 1) * cols],
            &mut q.packed[r * words..(r + 1) * words],
            &mut q.scales[r * groups..(r + 1) * groups],
            &mut q.biases[r * groups..(r + 1) * groups],
        );
    }
    q
}

/// Checks every quantized tensor of golden `name`; `bits(path)` gives a layer's width.
fn check(name: &str, group_size: usize, bits: impl Fn(&str) -> u32) {
    let (want, source) = (golden(name), source());
    let mut checked = 0;
    for (tensor, input) in &source {
        let Some(path) = tensor.strip_suffix(".weight") else { continue };
        if !want.contains_key(&format!("{path}.scales")) {
            // Left as stored (the norms).
            assert_eq!(want[tensor], sha256(&bf16_bytes(&input.0)), "{name} {tensor}");
            continue;
        }
        let q = quantize(Affine::new(bits(path), group_size).unwrap(), input);
        let words: Vec<u8> = q.packed.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(want[tensor], sha256(&words), "{name} {tensor}");
        assert_eq!(
            want[&format!("{path}.scales")],
            sha256(&bf16_bytes(&q.scales)),
            "{name} {path}"
        );
        assert_eq!(
            want[&format!("{path}.biases")],
            sha256(&bf16_bytes(&q.biases)),
            "{name} {path}"
        );
        checked += 1;
    }
    // 8 layers of 7 projections, the embeddings and lm_head.
    assert_eq!(checked, 58, "{name}");
}

#[test]
fn uniform_widths_give_mlx_lms_bytes() {
    check("q4-g64", 64, |_| 4);
    check("q8-g64", 64, |_| 8);
    check("q3-g32", 32, |_| 3);
}

#[test]
fn mixed_4_6_gives_mlx_lms_bytes() {
    let recipe = Recipe::named("mixed_4_6").unwrap();
    check("mixed_4_6", 64, |path| recipe.bits(path, 8));
}

#[test]
fn dequantizing_gives_mlx_lms_bytes() {
    let (want, source) = (golden("q4-g64-dequantized"), source());
    let a = Affine::new(4, 64).unwrap();
    let round = |x: f32| bf16_bits_to_f32(round_to_bf16(x, NanPolicy::Canonical));
    let mut checked = 0;
    for (tensor, input) in &source {
        if !tensor.ends_with("proj.weight")
            && !tensor.ends_with("embed_tokens.weight")
            && tensor != "lm_head.weight"
        {
            continue;
        }
        let (rows, cols) = (input.1, input.2);
        let q = quantize(a, input);
        let (scales, biases): (Vec<f32>, Vec<f32>) = (
            q.scales.iter().map(|&s| round(s)).collect(),
            q.biases.iter().map(|&b| round(b)).collect(),
        );
        let (words, groups) = (a.words(cols), a.groups(cols));
        let mut out = vec![0f32; rows * cols];
        for r in 0..rows {
            a.dequantize_row(
                &q.packed[r * words..(r + 1) * words],
                &scales[r * groups..(r + 1) * groups],
                &biases[r * groups..(r + 1) * groups],
                round,
                &mut out[r * cols..(r + 1) * cols],
            );
        }
        assert_eq!(want[tensor], sha256(&bf16_bytes(&out)), "{tensor}");
        checked += 1;
    }
    assert_eq!(checked, 58);
}
