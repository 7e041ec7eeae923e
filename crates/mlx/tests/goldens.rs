//! The quantizer against `mlx_lm.convert` (mlx 0.32.4, mlx-lm 0.32.2, CPU; made by
//! `scripts/make-mlx-goldens` from `tests/data/gguf/tiny-kq`): every tensor it writes for
//! every width (2 and 6 bits at group size 128, 4, 5 and 8 at 64, 3 at 32) and `mixed_4_6`,
//! and the 4-bit model dequantized back, has the SHA-256 of the bytes mlx wrote, and so has
//! every whole `model.safetensors` (header, and data in mlx's order) amalgam lays out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use amalgam_mlx::config::{Quantization, converted};
use amalgam_mlx::file::{Entry, index, write};
use amalgam_mlx::pyjson::dumps;
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

/// A golden `model.safetensors`'s SHA-256 and header length.
fn golden_file(name: &str) -> (String, u64) {
    let text = std::fs::read_to_string(data(&format!("mlx/{name}/tensors.json"))).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let file = &json["model.safetensors"];
    (file["sha256"].as_str().unwrap().to_owned(), file["header_bytes"].as_u64().unwrap())
}

/// The module paths of tiny-kq's linear layers and embeddings and the names of its other
/// tensors, in the order of mlx_lm's module tree (each module's parameters in turn).
fn tree() -> Vec<(String, bool)> {
    let mut out = vec![("model.embed_tokens".to_owned(), true)];
    for i in 0..8 {
        for m in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"] {
            out.push((format!("model.layers.{i}.{m}"), true));
        }
        for m in ["mlp.gate_proj", "mlp.down_proj", "mlp.up_proj"] {
            out.push((format!("model.layers.{i}.{m}"), true));
        }
        out.push((format!("model.layers.{i}.input_layernorm.weight"), false));
        out.push((format!("model.layers.{i}.post_attention_layernorm.weight"), false));
    }
    out.push(("model.norm.weight".to_owned(), false));
    out.push(("lm_head".to_owned(), true));
    out
}

/// The whole file from `tensors` (name, dtype, shape, bytes) in tree order: its SHA-256
/// and header length.
fn file_of(tensors: &[Tensor]) -> (String, u64) {
    let entries: Vec<Entry> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| Entry {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
            data,
        })
        .collect();
    let mut bytes = Vec::new();
    write(&entries, &mut bytes).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    (sha256(&bytes), header)
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

/// A tensor to write: name, dtype, shape, bytes.
type Tensor = (String, &'static str, Vec<usize>, Vec<u8>);

/// Every tensor of the model in tree order: the norms as stored, each linear layer and
/// the embeddings as `layer(path, input)` makes them.
fn model(layer: impl Fn(&str, &(Vec<f32>, usize, usize)) -> Vec<Tensor>) -> Vec<Tensor> {
    let source = source();
    let mut tensors = Vec::new();
    for (path, quantized) in tree() {
        if quantized {
            tensors.extend(layer(&path, &source[&format!("{path}.weight")]));
        } else {
            let (values, rows, cols) = &source[&path];
            let shape = vec![*rows, *cols].split_off(usize::from(*rows == 1));
            tensors.push((path, "BF16", shape, bf16_bytes(values)));
        }
    }
    tensors
}

/// Compares every tensor and the whole file with golden `name`.
fn compare(name: &str, tensors: &[Tensor]) {
    let want = golden(name);
    for (tensor, _, _, bytes) in tensors {
        assert_eq!(want[tensor], sha256(bytes), "{name} {tensor}");
    }
    assert_eq!(want.len(), tensors.len(), "{name}: the tensors");
    assert_eq!(file_of(tensors), golden_file(name), "{name}: the whole file");
}

/// Checks golden `name`; `bits(path)` gives a layer's width.
fn check(name: &str, group_size: usize, bits: impl Fn(&str) -> u32) {
    let tensors = model(|path, input| {
        let a = Affine::new(bits(path), group_size).unwrap();
        let q = quantize(a, input);
        let (rows, groups) = (input.1, a.groups(input.2));
        let words: Vec<u8> = q.packed.iter().flat_map(|w| w.to_le_bytes()).collect();
        vec![
            (format!("{path}.weight"), "U32", vec![rows, a.words(input.2)], words),
            (format!("{path}.scales"), "BF16", vec![rows, groups], bf16_bytes(&q.scales)),
            (format!("{path}.biases"), "BF16", vec![rows, groups], bf16_bytes(&q.biases)),
        ]
    });
    // 8 layers of 7 projections and 2 norms, the embeddings, the final norm and lm_head.
    assert_eq!(tensors.len(), 8 * (7 * 3 + 2) + 3 + 1 + 3, "{name}");
    compare(name, &tensors);
}

#[test]
fn uniform_widths_give_mlx_lms_bytes() {
    check("q4-g64", 64, |_| 4);
    check("q8-g64", 64, |_| 8);
    check("q3-g32", 32, |_| 3);
    check("q2-g128", 128, |_| 2);
    check("q5-g64", 64, |_| 5);
    check("q6-g128", 128, |_| 6);
}

#[test]
fn mixed_4_6_gives_mlx_lms_bytes() {
    let recipe = Recipe::named("mixed_4_6").unwrap();
    check("mixed_4_6", 64, |path| recipe.bits(path, 8));
}

#[test]
fn dequantizing_gives_mlx_lms_bytes() {
    let a = Affine::new(4, 64).unwrap();
    let round = |x: f32| bf16_bits_to_f32(round_to_bf16(x, NanPolicy::Canonical));
    let tensors = model(|path, input| {
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
        vec![(format!("{path}.weight"), "BF16", vec![rows, cols], bf16_bytes(&out))]
    });
    assert_eq!(tensors.len(), 8 * 9 + 3);
    compare("q4-g64-dequantized", &tensors);
}

fn read_json(path: &str) -> serde_json::Map<String, Value> {
    serde_json::from_str(&std::fs::read_to_string(data(path)).unwrap()).unwrap()
}

#[test]
fn configs_are_mlx_lms_byte_for_byte() {
    let (config, generation) =
        (read_json("gguf/tiny-kq/config.json"), read_json("gguf/tiny-kq/generation_config.json"));
    let uniform = |group_size, bits| {
        Some(Quantization { group_size, bits, mode: "affine", layers: Vec::new() })
    };
    let recipe = Recipe::named("mixed_4_6").unwrap();
    let layers = tree()
        .into_iter()
        .filter(|(_, q)| *q)
        .map(|(p, _)| (p.clone(), None, recipe.bits(&p, 8)))
        .collect();
    let mixed = Some(Quantization { group_size: 64, bits: 4, mode: "affine", layers });
    for (name, q) in [
        ("q4-g64", uniform(64, 4)),
        ("q8-g64", uniform(64, 8)),
        ("q3-g32", uniform(32, 3)),
        ("q2-g128", uniform(128, 2)),
        ("q5-g64", uniform(64, 5)),
        ("q6-g128", uniform(128, 6)),
        ("mixed_4_6", mixed),
        ("q4-g64-dequantized", None),
    ] {
        let want = std::fs::read_to_string(data(&format!("mlx/{name}/config.json"))).unwrap();
        let got = dumps(&Value::Object(converted(&config, Some(&generation), q.as_ref())));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn indexes_are_mlx_lms_byte_for_byte() {
    for (name, total_size) in [("q4-g64", 1925632), ("q3-g32", 1712640), ("mixed_4_6", 2056704)] {
        let names: Vec<(String, String)> =
            golden(name).into_keys().map(|n| (n, "model.safetensors".to_owned())).collect();
        let want =
            std::fs::read_to_string(data(&format!("mlx/{name}/model.safetensors.index.json")))
                .unwrap();
        assert_eq!(index(total_size, 3412224, &names), want, "{name}");
    }
}
