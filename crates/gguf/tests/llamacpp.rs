//! Quantizing tiny-kq to every llama.cpp mixture gives, tensor for tensor, the GGML type,
//! shape and data bytes llama.cpp's `llama_model_quantize` gave (no importance matrix).

use std::path::Path;

use amalgam_gguf::mixture::{ModelShape, tensor_type};
use amalgam_gguf::names::{gguf_dims, hf_to_gguf, permute_to_gguf, permuted_heads};
use amalgam_gguf::{FileType, GgmlType, quant};
use amalgam_tensors::ModelFolder;
use amalgam_tensors::dtype::decode_f32;
use sha2::{Digest, Sha256};

fn data() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/gguf")
}

/// Every tensor of tiny-kq as llama.cpp's F32 GGUF holds it: (GGUF name, dims, values).
fn f32_tensors() -> Vec<(String, Vec<u64>, Vec<f32>)> {
    let folder = ModelFolder::open(&data().join("tiny-kq")).unwrap();
    let mut out = Vec::new();
    for name in folder.names() {
        let t = folder.tensor(name).unwrap().unwrap();
        let mut values = vec![0f32; t.info.numel()];
        decode_f32(t.info.dtype, t.bytes(), &mut values);
        let gguf = hf_to_gguf(name).unwrap();
        if let Some(heads) = permuted_heads(&gguf, 4, 2) {
            let (rows, cols) = (t.info.shape[0], t.info.shape[1]);
            values = permute_to_gguf(&values, rows, cols, heads);
        }
        out.push((gguf, gguf_dims(&t.info.shape), values));
    }
    out
}

#[test]
fn every_mixture_matches_llama_cpp_byte_for_byte() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data().join("llamacpp-quantized.json")).unwrap(),
    )
    .unwrap();
    let tensors = f32_tensors();
    let shape = ModelShape { n_layer: 8, n_head: 4, n_head_kv: 2, tied: false };
    let mut problems = Vec::new();
    let mut checked = 0;
    for (mixture, expected) in golden["types"].as_object().unwrap() {
        let ftype =
            FileType::from_name(mixture).unwrap_or_else(|| panic!("unknown mixture {mixture}"));
        let expected = expected.as_object().unwrap();
        assert_eq!(expected.len(), tensors.len(), "{mixture}: tensor count");
        for (name, dims, values) in &tensors {
            let want = &expected[name];
            let ty = tensor_type(ftype, &shape, name, dims.len(), dims[0]);
            if want["type"] != ty.name() {
                problems.push(format!("{mixture} {name}: type {ty}, llama.cpp {}", want["type"]));
                continue;
            }
            let mut bytes = vec![0u8; ty.bytes_for(values.len() as u64).unwrap() as usize];
            quant::quantize(ty, values, &mut bytes);
            let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            if want["sha256"] != sha.as_str() || want["shape"] != serde_json::json!(dims) {
                problems.push(format!("{mixture} {name} ({ty}): data differs"));
            }
            checked += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} tensors differ:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(checked, 17 * tensors.len(), "every mixture, every tensor");
    assert_eq!(GgmlType::from_name("q4_k"), Some(GgmlType::Q4K));
}
