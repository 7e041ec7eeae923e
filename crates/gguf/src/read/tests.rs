//! GGUF reading: round trips with the writer, llama.cpp's own files, and hostile input.

use super::*;
use crate::write::{TensorSpec, layout};
use amalgam_tensors::PositionedFile;

fn sample_metadata() -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("a.u8".into(), Value::U8(7)),
        ("a.i8".into(), Value::I8(-7)),
        ("a.u16".into(), Value::U16(700)),
        ("a.i16".into(), Value::I16(-700)),
        ("a.u32".into(), Value::U32(70_000)),
        ("a.i32".into(), Value::I32(-70_000)),
        ("a.f32".into(), Value::F32(1.5)),
        ("a.bool".into(), Value::Bool(true)),
        ("a.u64".into(), Value::U64(1 << 40)),
        ("a.i64".into(), Value::I64(-(1 << 40))),
        ("a.f64".into(), Value::F64(-2.25)),
        ("a.strings".into(), Value::strings(["Ġthe", "<|eot_id|>"])),
        ("a.ints".into(), Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(-3)])),
    ]
}

/// A small valid file: the sample metadata and two tensors.
fn sample_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gguf");
    let tensors = vec![
        TensorSpec { name: "norm.weight".into(), dims: vec![3], ty: GgmlType::F32 },
        TensorSpec { name: "w.weight".into(), dims: vec![32, 2], ty: GgmlType::Q8_0 },
    ];
    let writer =
        PositionedFile::create(&path, layout(&sample_metadata(), &tensors).unwrap()).unwrap();
    writer.write_at(0, 0, &[1; 12]).unwrap();
    writer.write_at(1, 0, &[2; 68]).unwrap();
    writer.finish().unwrap();
    (dir, path)
}

#[test]
fn written_files_read_back() {
    let (_dir, path) = sample_file();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.header.version, 3);
    assert_eq!(file.header.metadata, sample_metadata());
    let w = file.header.tensor("w.weight").unwrap();
    assert_eq!((w.dims.clone(), w.ty, w.size), (vec![32, 2], GgmlType::Q8_0, 68));
    assert_eq!(w.offset % 32, 0);
    assert_eq!(file.data(w), &[2u8; 68][..]);
    assert_eq!(file.data(file.header.tensor("norm.weight").unwrap()), &[1u8; 12][..]);
}

#[test]
fn llama_cpp_files_read() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/gguf/tiny-kq-Q4_K_M.gguf");
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.header.get("general.architecture").and_then(Value::as_str), Some("llama"));
    assert_eq!(file.header.get("llama.block_count").and_then(Value::as_u64), Some(8));
    assert_eq!(file.header.tensors.len(), 75);
    assert_eq!(file.header.tensor("output.weight").unwrap().ty, GgmlType::Q6K);
}

fn must_fail(bytes: &[u8], expected: &str) {
    let err = parse(bytes).expect_err("must be rejected");
    assert!(err.1.contains(expected), "{expected:?} not in {err:?}");
}

#[test]
fn hostile_headers_are_errors() {
    let (_dir, path) = sample_file();
    let good = std::fs::read(&path).unwrap();
    must_fail(b"GGML\x03\0\0\0", "magic");
    let mut v1 = good.clone();
    v1[4] = 1;
    must_fail(&v1, "version 1");
    let mut many = good.clone();
    many[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    must_fail(&many, "tensors");
    let mut kvs = good.clone();
    kvs[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    must_fail(&kvs, "metadata entries");
    // The last tensor's data cut off (past its 28 bytes of padding): "runs past the end".
    must_fail(&good[..good.len() - 29], "runs past the end");
    assert!(
        parse(&good[..good.len() - 28]).is_ok(),
        "the padding after the last tensor is optional"
    );
    for len in 0..good.len() - 28 {
        assert!(parse(&good[..len]).is_err(), "prefix of {len} bytes");
    }
}

#[test]
fn random_mutations_never_panic() {
    let (_dir, path) = sample_file();
    let good = std::fs::read(&path).unwrap();
    let header_len = good.len() - 128;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut rejected = 0;
    for _ in 0..10_000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % header_len as u64) as usize;
            bytes[at] = match next() % 3 {
                0 => next() as u8,
                1 => bytes[at] ^ (1 << (next() % 8)),
                _ => 0xFF,
            };
        }
        match parse(&bytes) {
            Ok(header) => {
                // Whatever was accepted must be readable within the buffer.
                for t in &header.tensors {
                    let start = header.data_start + t.offset;
                    assert!(start + t.size <= bytes.len() as u64);
                }
            }
            Err(_) => rejected += 1,
        }
    }
    assert!(rejected > 1000, "mutations are mostly rejected ({rejected})");
}
