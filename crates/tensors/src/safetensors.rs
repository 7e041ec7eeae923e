//! Reading safetensors files through a memory map, with the header validated against the
//! file length before any tensor is touched, and pages released after use so that the
//! resident set stays bounded however large the model is.

// Untrusted bytes are parsed here: every index is checked.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Bytes beyond a released range that are released too. A fault maps Linux's
/// `fault_around_bytes` (64 KiB) of neighbouring pages, and with large page-cache folios
/// (ext4 since Linux 6.16, XFS, ...) a whole folio of up to 2 MiB; measured on 6.18/ext4,
/// 256 KiB still leaked, 4 MiB kept the resident set flat.
pub const FAULT_AROUND_MARGIN: usize = 4 << 20;

/// Where one tensor lives in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    /// Shape, outermost dimension first (PyTorch order).
    pub shape: Vec<usize>,
    /// Byte range of the data, relative to the start of the file.
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An open, validated safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    tensors: HashMap<String, TensorInfo>,
    /// Tensors whose dtype amalgam cannot compute with, by name, with the dtype's name.
    unsupported: HashMap<String, String>,
}

impl SafetensorsFile {
    /// Maps `path` and validates its header: sizes, offsets and the file length.
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        // SAFETY: the map is read-only and model files are treated as immutable while a
        // merge runs, the same contract every tool that maps weights relies on. A file
        // truncated underneath us would fault, not corrupt memory we own.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("map", path, e))?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::Safetensors { path: path.to_owned(), reason: describe(&e) })?;
        let data_start = 8 + header_len;
        let mut tensors = HashMap::new();
        let mut unsupported = HashMap::new();
        for (name, info) in metadata.tensors() {
            match DType::from_safetensors(info.dtype) {
                Some(dtype) => {
                    let (start, end) = info.data_offsets;
                    let info = TensorInfo {
                        dtype,
                        shape: info.shape.clone(),
                        start: data_start + start,
                        end: data_start + end,
                    };
                    tensors.insert(name, info);
                }
                None => {
                    unsupported.insert(name, format!("{:?}", info.dtype));
                }
            }
        }
        Ok(SafetensorsFile { path: path.to_owned(), mmap, tensors, unsupported })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks up a tensor; `Ok(None)` if the file has no tensor of that name.
    pub fn info(&self, name: &str) -> Result<Option<&TensorInfo>> {
        if let Some(dtype) = self.unsupported.get(name) {
            return Err(Error::UnsupportedDtype {
                path: self.path.clone(),
                name: name.to_owned(),
                dtype: dtype.clone(),
            });
        }
        Ok(self.tensors.get(name))
    }

    /// Names of every tensor in the file, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().chain(self.unsupported.keys()).map(String::as_str)
    }

    /// The bytes in `range`, relative to the start of the file. The range comes from a
    /// validated header, so it is in bounds.
    #[allow(
        clippy::indexing_slicing,
        reason = "tensor ranges are validated against the file length at open, and callers \
                  check sub-ranges against them (a bug, not input, can break this)"
    )]
    pub fn bytes(&self, start: usize, end: usize) -> &[u8] {
        &self.mmap[start..end]
    }

    /// Tells the kernel the pages of `start..end` are no longer needed (see
    /// [`release_pages`]).
    pub fn release(&self, start: usize, end: usize) {
        release_pages(&self.mmap, start, end);
    }
}

/// Tells the kernel the pages of `start..end` of a read-only file map are no longer
/// needed, so they leave the resident set (they stay in the page cache and fault back in
/// if read again): the one page-release mechanism, for safetensors and GGUF alike.
///
/// The range is widened by [`FAULT_AROUND_MARGIN`] on each side: a page fault maps
/// neighbouring cached pages too (fault-around, large folios), and when those belong to a
/// range another thread has already released, nothing would ever unmap them. Unmapping a
/// neighbour that is still being read only costs that reader a soft fault.
pub fn release_pages(mmap: &Mmap, start: usize, end: usize) {
    let start = start.saturating_sub(FAULT_AROUND_MARGIN);
    let end = end.saturating_add(FAULT_AROUND_MARGIN).min(mmap.len());
    if end <= start {
        return;
    }
    // SAFETY: the map is read-only and file-backed: MADV_DONTNEED only drops our mapping
    // of clean pages, and a later read faults the same bytes back in from the file. No
    // reference into the range outlives this call in a way that could observe a change,
    // because the contents do not change.
    let _ = unsafe { mmap.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
}

/// Words a safetensors parse error for a user.
fn describe(error: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match error {
        E::HeaderTooSmall => "the file is shorter than the 8-byte header length".into(),
        E::HeaderTooLarge => "the header length is over 100 MB".into(),
        E::InvalidHeaderLength => "the header length runs past the end of the file".into(),
        E::InvalidHeader(_) => "the header is not UTF-8".into(),
        E::InvalidHeaderDeserialization(e) => format!("the header is not valid JSON ({e})"),
        E::MetadataIncompleteBuffer => {
            "the tensor data does not end where the file ends (truncated or padded)".into()
        }
        E::InvalidOffset(name) => format!("tensor {name} has invalid data offsets"),
        E::TensorInvalidInfo => "a tensor's byte size does not match its shape and dtype".into(),
        E::ValidationOverflow => "a tensor's shape overflows".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    fn valid_file() -> Vec<u8> {
        let header = br#"{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0x80, 0x3F, 0x00, 0x40]);
        bytes
    }

    #[test]
    fn reads_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "ok.safetensors", &valid_file());
        let file = SafetensorsFile::open(&path).unwrap();
        let info = file.info("a").unwrap().unwrap().clone();
        assert_eq!(info.dtype, DType::BF16);
        assert_eq!(info.shape, vec![2]);
        assert_eq!(file.bytes(info.start, info.end), &[0x80, 0x3F, 0x00, 0x40]);
        assert!(file.info("b").unwrap().is_none());
    }

    #[test]
    fn truncated_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = valid_file();
        let path = write(dir.path(), "cut.safetensors", &bytes[..bytes.len() - 1]);
        let err = SafetensorsFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("cut.safetensors"), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn every_prefix_is_an_error_and_every_mutation_an_error_or_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = valid_file();
        for len in 0..bytes.len() {
            let path = write(dir.path(), "p.safetensors", &bytes[..len]);
            assert!(SafetensorsFile::open(&path).is_err(), "a {len}-byte prefix opened");
        }
        let find = |text: &[u8]| bytes.windows(text.len()).position(|w| w == text).unwrap();
        let dtype = find(b"BF16")..find(b"BF16") + 4;
        let offsets = find(b"[0,4]")..find(b"[0,4]") + 5;
        let data = bytes.len() - 4..bytes.len();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut m = bytes.clone();
                m[i] ^= flip;
                let path = write(dir.path(), "m.safetensors", &m);
                let read = SafetensorsFile::open(&path)
                    .and_then(|f| Ok(f.info("a")?.map(|t| f.bytes(t.start, t.end).to_vec())));
                let what = format!("byte {i} ^ {flip:#04x}");
                if i < 8 || offsets.contains(&i) || dtype.contains(&i) {
                    // The header length, the offsets and the dtype: the file is invalid.
                    assert!(read.is_err(), "{what} read {read:?}");
                } else if data.contains(&i) {
                    // The values: read back as they are now.
                    assert_eq!(read.unwrap(), Some(m[data.clone()].to_vec()), "{what}");
                }
                // Elsewhere (the name, the shape, the JSON punctuation) either is fine, as
                // long as nothing panics.
            }
        }
    }

    #[test]
    fn unsupported_dtype_is_named_on_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let header = br#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0; 8]);
        let path = write(dir.path(), "i.safetensors", &bytes);
        let file = SafetensorsFile::open(&path).unwrap();
        let err = file.info("ids").err().unwrap().to_string();
        assert!(err.contains("ids") && err.contains("I64"), "{err}");
    }
}
