//! Reading GGUF (v2 and v3) through a memory map. Every count, length, size and offset
//! is checked against the file before it is used, so a truncated, corrupt or hostile file
//! gives an error naming the byte where it went wrong — never a panic, an out-of-bounds
//! read, or an allocation the file cannot back.

// Untrusted bytes are parsed here: every index is checked.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{GgufError, Result};
use crate::ggml_type::GgmlType;
use crate::value::{Value, ValueType};

/// The default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's limit on string and array lengths.
const MAX_LENGTH: u64 = 1 << 30;
/// ggml's limit on tensor name bytes (`GGML_MAX_NAME - 1`).
pub const MAX_NAME: usize = 63;

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header: version, metadata, tensor infos and where the data starts.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

impl Header {
    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub header: Header,
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| GgufError::io("open", path, e))?;
        // SAFETY: read-only map of a model file treated as immutable while in use, as for
        // safetensors inputs; a file truncated underneath would fault, not corrupt memory.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io("map", path, e))?;
        let header = parse(&mmap).map_err(|(offset, reason)| GgufError::Invalid {
            path: path.to_owned(),
            offset,
            reason,
        })?;
        Ok(GgufFile { path: path.to_owned(), mmap, header })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the pages of data bytes `start..end` (relative to the data section) from the
    /// resident set ([`amalgam_tensors::safetensors::release_pages`]).
    pub fn release(&self, start: u64, end: u64) {
        let base = self.header.data_start;
        let to = |offset: u64| usize::try_from(base.saturating_add(offset)).unwrap_or(usize::MAX);
        amalgam_tensors::safetensors::release_pages(&self.mmap, to(start), to(end));
    }

    /// The data bytes of a tensor (its range was checked against the file at open).
    #[allow(
        clippy::indexing_slicing,
        reason = "every tensor's range is checked against the file at open, and a TensorInfo \
                  comes from this file's header (a bug, not input, can break this)"
    )]
    pub fn data(&self, tensor: &TensorInfo) -> &[u8] {
        let start = (self.header.data_start + tensor.offset) as usize;
        &self.mmap[start..start + tensor.size as usize]
    }
}

/// A parse failure: the byte offset and what was wrong.
type ParseError = (u64, String);

/// Parses a GGUF header from the whole file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Header, ParseError> {
    let mut r = Reader { bytes, pos: 0 };
    let magic = r.take(4)?;
    if magic != b"GGUF" {
        return Err((0, format!("the magic is {magic:?}, not \"GGUF\"")));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err((4, format!("version {version} is not supported (2 and 3 are)")));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    r.check_count(kv_count, 8 + 4 + 1, "metadata entries")?;
    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut keys = HashSet::new();
    for _ in 0..kv_count {
        let at = r.pos as u64;
        let key = r.string()?;
        if !keys.insert(key.clone()) {
            return Err((at, format!("metadata key {key:?} appears twice")));
        }
        let ty = r.value_type()?;
        metadata.push((key, r.value(ty)?));
    }
    let alignment = alignment(&metadata)?;
    r.check_count(tensor_count, 8 + 4 + 8 + 4 + 8, "tensors")?;
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut names = HashSet::new();
    for _ in 0..tensor_count {
        let at = r.pos as u64;
        let info = r.tensor_info()?;
        if !names.insert(info.name.clone()) {
            return Err((at, format!("tensor {:?} appears twice", info.name)));
        }
        tensors.push(info);
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (bytes.len() as u64).saturating_sub(data_start);
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err((
                data_start,
                format!(
                    "tensor {:?} has offset {}, not a multiple of the alignment {alignment}",
                    t.name, t.offset
                ),
            ));
        }
        if t.offset.checked_add(t.size).is_none_or(|end| end > data_len) {
            return Err((
                data_start + t.offset,
                format!(
                    "tensor {:?} ({} bytes at data offset {}) runs past the end of the file; the file is truncated",
                    t.name, t.size, t.offset
                ),
            ));
        }
    }
    Ok(Header { version, metadata, tensors, alignment, data_start })
}

/// `general.alignment`, which ggml requires to be a u32 power of two.
fn alignment(metadata: &[(String, Value)]) -> Result<u64, ParseError> {
    match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some((_, v)) => {
            Err((0, format!("general.alignment is {v}; it must be a u32 power of two")))
        }
    }
}

/// A bounds-checked cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> ParseError {
        (self.pos as u64, reason.into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| Some((end, self.bytes.get(self.pos..end)?))) {
            Some((end, out)) => {
                self.pos = end;
                Ok(out)
            }
            None => {
                Err(self.err(format!("needs {n} more bytes but the file ends; it is truncated")))
            }
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Rejects a count of items that could not fit in the rest of the file, before
    /// anything is allocated for them.
    fn check_count(&self, count: u64, min_item: u64, what: &str) -> Result<(), ParseError> {
        let left = (self.bytes.len() - self.pos) as u64;
        if count.checked_mul(min_item).is_none_or(|need| need > left) {
            return Err(self
                .err(format!("claims {count} {what}, more than the {left} bytes left can hold")));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let len = self.u64()?;
        if len > MAX_LENGTH {
            return Err(self.err(format!("a string of {len} bytes is over ggml's limit of 2^30")));
        }
        let at = self.pos;
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| (at as u64, "a string is not valid UTF-8".to_owned()))
    }

    fn value_type(&mut self) -> Result<ValueType, ParseError> {
        let id = self.u32()?;
        ValueType::from_id(id).ok_or_else(|| self.err(format!("unknown metadata value type {id}")))
    }

    fn value(&mut self, ty: ValueType) -> Result<Value, ParseError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>()?[0]),
            ValueType::I8 => Value::I8(self.array::<1>()?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("a bool is {b}, not 0 or 1"))),
            },
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            ValueType::Array => {
                let elem = self.value_type()?;
                if elem == ValueType::Array {
                    return Err(self.err("arrays of arrays are not supported (ggml rejects them)"));
                }
                let count = self.u64()?;
                if count > MAX_LENGTH {
                    return Err(self.err(format!(
                        "an array of {count} elements is over ggml's limit of 2^30"
                    )));
                }
                self.check_count(count, elem.min_size() as u64, "array elements")?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, ParseError> {
        let name = self.string()?;
        if name.len() > MAX_NAME {
            return Err(self.err(format!("tensor name {name:?} is over {MAX_NAME} bytes")));
        }
        let n_dims = self.u32()?;
        if !(1..=4).contains(&n_dims) {
            return Err(
                self.err(format!("tensor {name:?} has {n_dims} dimensions (1 to 4 allowed)"))
            );
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64()?);
        }
        let id = self.u32()?;
        let ty = GgmlType::from_id(id).ok_or_else(|| {
            self.err(format!("tensor {name:?} has ggml type {id}, which amalgam does not read"))
        })?;
        let offset = self.u64()?;
        let numel = dims.iter().try_fold(1u64, |n, d| n.checked_mul(*d));
        let size = numel
            .filter(|_| dims.first().is_some_and(|d| d % ty.block_size() as u64 == 0))
            .filter(|n| *n < 1 << 62)
            .and_then(|n| ty.bytes_for(n))
            .ok_or_else(|| {
                self.err(format!("tensor {name:?} has dimensions {dims:?}, impossible for {ty}"))
            })?;
        Ok(TensorInfo { name, dims, ty, offset, size })
    }
}

#[cfg(test)]
mod tests;
