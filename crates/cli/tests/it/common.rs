//! Helpers shared by the integration tests: running the binary, reading outputs, and
//! copying fixture models so a test can damage its copy.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use amalgam_tensors::ModelFolder;
use amalgam_tensors::dtype::{decode_f32, encode_f32};
use sha2::{Digest, Sha256};

/// The repository's `tests/data`.
pub fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// The seed fixture's hub cache.
pub fn seed_hub() -> PathBuf {
    data().join("seed/hub")
}

/// The `amalgam` binary with a clean, offline hub environment.
pub fn amalgam() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amalgam"));
    for var in ["HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HUB_OFFLINE", "1");
    cmd
}

/// Runs a command, returning its output; stderr must never show a panic.
pub fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("the amalgam binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "amalgam panicked:\n{stderr}");
    output
}

/// Runs a command that must succeed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let output = run(cmd);
    assert!(
        output.status.success(),
        "amalgam failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Merges `config` with `amalgam merge --quiet`, run in `models` (configs name models by
/// relative path), into a new temporary folder; returns the folder, which must be kept
/// alive while the output is read, and the output's path.
pub fn merge_in(models: &Path, config: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run_ok(amalgam().current_dir(models).arg("merge").arg(config).arg(&out).arg("--quiet"));
    (tmp, out)
}

/// A tensor read back: dtype name, shape and raw bytes.
pub struct Tensor {
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Tensor {
    /// SHA-256 of the raw bytes, in hex.
    pub fn sha256(&self) -> String {
        Sha256::digest(&self.bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A tensor of `dtype` holding `values` (rounded to it).
    pub fn from_values(dtype: amalgam_tensors::DType, shape: Vec<usize>, values: &[f32]) -> Tensor {
        let mut bytes = vec![0u8; values.len() * dtype.size()];
        encode_f32(dtype, values, &mut bytes);
        Tensor { dtype: dtype.torch_name(), shape, bytes }
    }

    /// The values as `f32`.
    pub fn values(&self, folder_dtype: amalgam_tensors::DType) -> Vec<f32> {
        let mut out = vec![0f32; self.bytes.len() / folder_dtype.size()];
        decode_f32(folder_dtype, &self.bytes, &mut out);
        out
    }
}

/// A model's tensors by name, with their dtypes.
pub type ModelTensors = BTreeMap<String, (amalgam_tensors::DType, Tensor)>;

/// Every tensor of a model folder (single file or sharded), by name.
pub fn read_model(dir: &Path) -> ModelTensors {
    let folder = ModelFolder::open(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    folder
        .names()
        .into_iter()
        .map(|name| {
            let t = folder.tensor(name).unwrap().unwrap();
            let tensor = Tensor {
                dtype: t.info.dtype.torch_name(),
                shape: t.info.shape.clone(),
                bytes: t.bytes().to_vec(),
            };
            (name.to_owned(), (t.info.dtype, tensor))
        })
        .collect()
}

/// `ours` holds the same tensors as mergekit's `theirs`, with the same dtypes, shapes and
/// bytes.
pub fn assert_same_tensors(label: &str, ours: &ModelTensors, theirs: &ModelTensors) {
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "{label}");
    for (name, (dtype, tensor)) in theirs {
        let (our_dtype, ours) = &ours[name];
        assert_eq!((our_dtype, &ours.shape), (dtype, &tensor.shape), "{label}: {name}");
        assert!(ours.bytes == tensor.bytes, "{label}: {name} differs from mergekit");
    }
}

/// `ours` equals mergekit's `config.json` `theirs`, but for `transformers_version`.
pub fn assert_same_config(label: &str, ours: &Path, theirs: &Path) {
    let mut config = json(ours);
    let theirs = json(theirs);
    config["transformers_version"] = theirs["transformers_version"].clone();
    assert_eq!(config, theirs, "{label}: config.json");
}

/// Every tensor of one safetensors file, by name.
pub fn read_safetensors(path: &Path) -> ModelTensors {
    let file = amalgam_tensors::SafetensorsFile::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let names: Vec<String> = file.names().map(str::to_owned).collect();
    names
        .into_iter()
        .map(|name| {
            let info = file.info(&name).unwrap().unwrap();
            let tensor = Tensor {
                dtype: info.dtype.torch_name(),
                shape: info.shape.clone(),
                bytes: file.bytes(info.start, info.end).to_vec(),
            };
            (name, (info.dtype, tensor))
        })
        .collect()
}

/// Copies a model folder (following symlinks) so a test can modify it.
pub fn copy_model(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Parses a JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Resizes a model folder's vocabulary-indexed weights (`model.embed_tokens.weight`,
/// `lm_head.weight`) to `rows` rows — cut, or extended with rows of [`pattern`] values
/// (seeded by the row index) — rewriting its safetensors files and `vocab_size`.
pub fn resize_vocab(dir: &Path, rows: usize) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            resize_file(&path, rows);
        }
    }
    let config_path = dir.join("config.json");
    let mut config = json(&config_path);
    config["vocab_size"] = rows.into();
    fs::write(&config_path, config.to_string()).unwrap();
}

fn resize_file(path: &Path, rows: usize) {
    let bytes = fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut entries: Vec<(String, serde_json::Value)> = header.into_iter().collect();
    entries.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap_or(0));
    let (mut new_header, mut new_data) = (serde_json::Map::new(), Vec::new());
    for (name, mut info) in entries {
        if name == "__metadata__" {
            new_header.insert(name, info);
            continue;
        }
        let [start, end] = [0, 1].map(|i| info["data_offsets"][i].as_u64().unwrap() as usize);
        let mut tensor = data[start..end].to_vec();
        if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
            let old_rows = info["shape"][0].as_u64().unwrap() as usize;
            let cols = info["shape"][1].as_u64().unwrap() as usize;
            let dtype = match info["dtype"].as_str().unwrap() {
                "BF16" => amalgam_tensors::DType::BF16,
                "F16" => amalgam_tensors::DType::F16,
                _ => amalgam_tensors::DType::F32,
            };
            tensor.truncate(tensor.len() / old_rows * rows.min(old_rows));
            for row in old_rows..rows {
                let mut bytes = vec![0u8; cols * dtype.size()];
                amalgam_tensors::dtype::encode_f32(dtype, &pattern(row, &[cols]), &mut bytes);
                tensor.extend(bytes);
            }
            info["shape"][0] = rows.into();
        }
        info["data_offsets"] = serde_json::json!([new_data.len(), new_data.len() + tensor.len()]);
        new_data.extend_from_slice(&tensor);
        new_header.insert(name, info);
    }
    write_raw(path, &new_header, &new_data);
}

/// Writes a safetensors file from its header and data.
fn write_raw(path: &Path, header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) {
    let mut text = serde_json::to_vec(header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    fs::write(path, out).unwrap();
}

/// Writes a float32 model folder: `config.json` and one `model.safetensors` holding
/// `tensors` (name, shape), each filled with values that differ per tensor and element.
pub fn write_model(dir: &Path, config: &serde_json::Value, tensors: &[(String, Vec<usize>)]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let filled: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .enumerate()
        .map(|(t, (name, shape))| (name.clone(), shape.clone(), pattern(t, shape)))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &filled);
}

/// Values in [-0.5, 0.5) that differ per `seed` and element.
pub fn pattern(seed: usize, shape: &[usize]) -> Vec<f32> {
    (0..shape.iter().product::<usize>())
        .map(|e| ((seed * 131 + e * 17) % 97) as f32 / 97.0 - 0.5)
        .collect()
}

/// Writes a float32 safetensors file of (name, shape, values).
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for (name, shape, values) in tensors {
        let start = data.len();
        values.iter().for_each(|v| data.extend_from_slice(&v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    write_raw(path, &header, &data);
}

/// Every tensor's (type, dims, bytes) by name.
pub fn gguf_tensors(path: &Path) -> Vec<(String, String, Vec<u64>, Vec<u8>)> {
    let file = amalgam_gguf::GgufFile::open(path).unwrap();
    let mut out: Vec<_> = file
        .header
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty.name().to_owned(), t.dims.clone(), file.data(t).to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The SmolLM2 GGUF fetched by scripts/fetch-smollm2 (scripts/test fetches it first).
pub fn smollm2() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-smollm2 (scripts/test does)",
        path.display()
    );
    path
}

pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn error_of(cmd: &mut std::process::Command) -> String {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    stderr(&out)
}

/// The first `bytes` bytes of the GPL-3 text (on every machine), written to
/// `dir/gpl3.txt`.
pub fn gpl3(dir: &Path, bytes: usize) -> PathBuf {
    let gpl = fs::read("/usr/share/common-licenses/GPL-3").unwrap();
    let path = dir.join("gpl3.txt");
    fs::write(&path, &gpl[..bytes]).unwrap();
    path
}
