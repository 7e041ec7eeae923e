//! The safetensors layout: the header is computed from names, dtypes and shapes up front,
//! so tensor data can be written at known offsets, in any order and from several threads,
//! without the tensors ever being in memory together.

use serde_json::{Map, Value, json};

use crate::dtype::DType;
use crate::positioned::FileLayout;
#[cfg(doc)]
use crate::positioned::PositionedFile;

/// One tensor of a file to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Size of the tensor's data in bytes.
    pub fn byte_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// The byte layout of a safetensors file holding `tensors` in the given order, with
/// `metadata` as `__metadata__`: what [`PositionedFile`] writes.
pub fn safetensors_layout(tensors: &[TensorSpec], metadata: &[(&str, &str)]) -> FileLayout {
    let mut header = Map::new();
    if !metadata.is_empty() {
        let meta: Map<String, Value> =
            metadata.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        header.insert("__metadata__".into(), Value::Object(meta));
    }
    let mut position = 0u64;
    let mut regions = Vec::with_capacity(tensors.len());
    for t in tensors {
        let len = t.byte_len() as u64;
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.safetensors_name(), "shape": t.shape,
                   "data_offsets": [position, position + len]}),
        );
        regions.push((position, len));
        position += len;
    }
    let mut json = Value::Object(header).to_string().into_bytes();
    // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    FileLayout::new(bytes, &regions, position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positioned::PositionedFile;
    use crate::safetensors::SafetensorsFile;

    #[test]
    fn written_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let specs = vec![
            TensorSpec { name: "b".into(), dtype: DType::F16, shape: vec![3] },
            TensorSpec { name: "a".into(), dtype: DType::F32, shape: vec![2, 1] },
        ];
        let layout = safetensors_layout(&specs, &[("format", "pt")]);
        let writer = PositionedFile::create(&path, layout).unwrap();
        // Out of order, and the first tensor in two pieces.
        writer.write_at(1, 0, &[0, 0, 128, 63, 0, 0, 0, 64]).unwrap();
        writer.write_at(0, 2, &[0, 60, 0, 64]).unwrap();
        writer.write_at(0, 0, &[0, 188]).unwrap();
        writer.finish().unwrap();

        let file = SafetensorsFile::open(&path).unwrap();
        let a = file.info("a").unwrap().unwrap();
        assert_eq!(a.shape, vec![2, 1]);
        assert_eq!(file.bytes(a.start, a.end), &[0, 0, 128, 63, 0, 0, 0, 64]);
        let b = file.info("b").unwrap().unwrap();
        assert_eq!(file.bytes(b.start, b.end), &[0, 188, 0, 60, 0, 64]);
        assert_eq!((b.start - 8) % 8, 0, "data is 8-byte aligned");
    }
}
