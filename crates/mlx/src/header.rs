//! The tensor list of an MLX folder, read from its safetensors headers (mlx stores packed
//! weights as U32, which the float-only readers elsewhere refuse), and each quantized
//! module's bits and group size as its `config.json` records them.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{MlxError, Result};
use crate::method::Method;

/// One stored tensor.
pub struct Stored {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: usize,
    /// Where its data starts in the file.
    pub start: u64,
}

/// A header no larger than this is read (mlx's are a few hundred bytes per tensor).
const MAX_HEADER: u64 = 100 << 20;

/// The tensors of one safetensors file, from its header.
pub fn read(path: &Path) -> Result<Vec<Stored>> {
    let bad = |reason: &str| MlxError::Header { path: path.to_owned(), reason: reason.to_owned() };
    let mut file =
        File::open(path).map_err(|source| MlxError::Read { path: path.to_owned(), source })?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("shorter than its header length"))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(bad("header length past 100 MiB"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|_| bad("shorter than its header"))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|_| bad("header is not a JSON object"))?;
    let mut out = Vec::new();
    for (name, info) in header.iter().filter(|(n, _)| *n != "__metadata__") {
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a tensor without a dtype"))?;
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("a tensor without a shape"))?;
        let shape: Option<Vec<usize>> =
            shape.iter().map(|d| d.as_u64().map(|d| d as usize)).collect();
        let offsets = info.get("data_offsets").and_then(Value::as_array);
        let first = offsets.and_then(|o| o.first()?.as_u64());
        let span = offsets.and_then(|o| Some(o.get(1)?.as_u64()?.checked_sub(first?)? as usize));
        out.push(Stored {
            name: name.clone(),
            dtype: dtype.to_owned(),
            shape: shape.ok_or_else(|| bad("a shape that is not whole numbers"))?,
            bytes: span.ok_or_else(|| bad("bad data offsets"))?,
            start: (8 + len)
                .checked_add(first.unwrap_or(0))
                .ok_or_else(|| bad("bad data offsets"))?,
        });
    }
    Ok(out)
}

/// A `quantization` entry's bits, group size and mode, where it has them.
fn entry(entry: &Map<String, Value>) -> (Option<u32>, Option<usize>, Option<&str>) {
    let bits = entry.get("bits").and_then(Value::as_u64).and_then(|b| u32::try_from(b).ok());
    let group =
        entry.get("group_size").and_then(Value::as_u64).and_then(|g| usize::try_from(g).ok());
    (bits, group, entry.get("mode").and_then(Value::as_str))
}

/// The quantization of module `path` (e.g. `model.layers.0.mlp.up_proj`) by the config's
/// `quantization`: its own entry, else the top level (group size 64 when null, mode
/// affine when absent, as mlx_lm's loader reads it); `None` without a `quantization`.
pub fn quantization(config: &Map<String, Value>, path: &str) -> Result<Option<Method>> {
    let Some(q) = config.get("quantization").and_then(Value::as_object) else { return Ok(None) };
    let top = entry(q);
    let (bits, group, mode) = match q.get(path).and_then(Value::as_object) {
        // A layer's own entry may leave out the mode: then it is affine.
        Some(own) => {
            let (bits, group, mode) = entry(own);
            (bits.or(top.0), group.or(top.1), mode.unwrap_or("affine"))
        }
        None => (top.0, top.1, top.2.unwrap_or("affine")),
    };
    let bad = |reason: String| MlxError::Layer { module: path.to_owned(), reason };
    let bits = bits.ok_or_else(|| bad("config.json's quantization gives it no bits".into()))?;
    Method::new(mode, Some(bits), group).map(Some).map_err(|e| {
        bad(format!("config.json's quantization ({bits} bits, group size {group:?}, {mode}): {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `bytes` as a file.
    fn read_bytes(bytes: &[u8]) -> Result<Vec<Stored>> {
        let path = std::env::temp_dir().join(format!("amalgam-mlx-header-{}", std::process::id()));
        std::fs::write(&path, bytes)
            .map_err(|source| MlxError::Read { path: path.clone(), source })?;
        let got = read(&path);
        let _ = std::fs::remove_file(&path);
        got
    }

    fn file(header: &str) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes
    }

    #[test]
    fn headers_read_back_and_bad_ones_are_errors() {
        let good = file(
            r#"{"__metadata__":{"format":"mlx"},"a.weight":{"data_offsets":[0,8],"dtype":"U32","shape":[1,2]}}"#,
        );
        let t = read_bytes(&good).unwrap();
        assert_eq!(
            (t[0].name.as_str(), t[0].dtype.as_str(), t[0].shape.clone(), t[0].bytes),
            ("a.weight", "U32", vec![1, 2], 8)
        );
        for (bytes, reason) in [
            (vec![1, 2, 3], "shorter than its header length"),
            (u64::MAX.to_le_bytes().to_vec(), "header length past 100 MiB"),
            (file("[1]"), "not a JSON object"),
            (file(r#"{"a":{"data_offsets":[8,0],"dtype":"F32","shape":[2]}}"#), "bad data offsets"),
            (
                file(r#"{"a":{"data_offsets":[0,8],"dtype":"F32","shape":[-2]}}"#),
                "not whole numbers",
            ),
        ] {
            let err = read_bytes(&bytes).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(reason), "{reason}: {err}");
        }
    }
}
