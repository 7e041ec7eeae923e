//! Streaming safetensors writer: the header is computed from names, dtypes and shapes up
//! front, so tensor data can be written at known offsets, in any order and from several
//! threads, without the tensors ever being in memory together.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::dtype::DType;
use crate::error::{Error, Result};

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

/// The byte layout of a safetensors file: its header and where each tensor's data goes.
#[derive(Clone, Debug)]
pub struct Layout {
    header: Vec<u8>,
    /// Absolute byte offset of each tensor's data, in the order given.
    offsets: Vec<u64>,
    total_len: u64,
}

impl Layout {
    /// Lays out `tensors` in the given order, with `metadata` as `__metadata__`.
    pub fn new(tensors: &[TensorSpec], metadata: &[(&str, &str)]) -> Layout {
        let mut header = Map::new();
        if !metadata.is_empty() {
            let meta: Map<String, Value> =
                metadata.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            header.insert("__metadata__".into(), Value::Object(meta));
        }
        let mut position = 0usize;
        let mut relative = Vec::with_capacity(tensors.len());
        for t in tensors {
            let end = position + t.byte_len();
            header.insert(
                t.name.clone(),
                json!({"dtype": t.dtype.safetensors_name(), "shape": t.shape,
                       "data_offsets": [position, end]}),
            );
            relative.push(position as u64);
            position = end;
        }
        let mut header = Value::Object(header).to_string().into_bytes();
        // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let data_start = 8 + header.len() as u64;
        Layout {
            offsets: relative.into_iter().map(|r| r + data_start).collect(),
            total_len: data_start + position as u64,
            header,
        }
    }

    /// Total file size in bytes.
    pub fn file_len(&self) -> u64 {
        self.total_len
    }

    /// Absolute offset of tensor `index`'s data.
    pub fn offset(&self, index: usize) -> u64 {
        self.offsets[index]
    }
}

/// A safetensors file being written: header in place, data filled in at offsets.
pub struct ShardWriter {
    path: PathBuf,
    file: File,
    layout: Layout,
}

impl ShardWriter {
    /// Creates `path`, writes the header and sizes the file to its final length.
    pub fn create(path: &Path, layout: Layout) -> Result<ShardWriter> {
        let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        let len = layout.header.len() as u64;
        let write = |file: &File| -> std::io::Result<()> {
            file.write_all_at(&len.to_le_bytes(), 0)?;
            file.write_all_at(&layout.header, 8)?;
            file.set_len(layout.total_len)
        };
        write(&file).map_err(|e| Error::io("write", path, e))?;
        Ok(ShardWriter { path: path.to_owned(), file, layout })
    }

    /// Writes `bytes` at byte `offset` within tensor `index`'s data. Safe to call from
    /// several threads for disjoint ranges.
    pub fn write_at(&self, index: usize, offset: usize, bytes: &[u8]) -> Result<()> {
        let at = self.layout.offset(index) + offset as u64;
        self.file.write_all_at(bytes, at).map_err(|e| Error::io("write", &self.path, e))
    }

    /// Flushes the file to stable storage.
    pub fn finish(self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io("sync", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::SafetensorsFile;

    #[test]
    fn written_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let specs = vec![
            TensorSpec { name: "b".into(), dtype: DType::F16, shape: vec![3] },
            TensorSpec { name: "a".into(), dtype: DType::F32, shape: vec![2, 1] },
        ];
        let layout = Layout::new(&specs, &[("format", "pt")]);
        let writer = ShardWriter::create(&path, layout).unwrap();
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
