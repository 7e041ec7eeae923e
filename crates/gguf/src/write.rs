//! The GGUF v3 layout: the header and every tensor's offset are computed from the tensor
//! specs up front, so data can be written tensor by tensor (or chunk by chunk, from
//! several threads) at known offsets; the whole model is never in memory.

use amalgam_tensors::FileLayout;
#[cfg(doc)]
use amalgam_tensors::PositionedFile;

use crate::error::{GgufError, Result};
use crate::ggml_type::GgmlType;
use crate::read::{DEFAULT_ALIGNMENT, MAX_NAME};
use crate::value::Value;

/// A tensor to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    /// Bytes of data (the dims were validated by [`Layout::new`]).
    pub fn size(&self) -> u64 {
        self.ty.bytes_for(self.dims.iter().product()).unwrap_or(0)
    }
}

/// The complete byte layout of a GGUF v3 file: tensors stored in the order given, each
/// padded to 32 bytes — what [`PositionedFile`] writes.
pub fn layout(metadata: &[(String, Value)], tensors: &[TensorSpec]) -> Result<FileLayout> {
    let alignment = DEFAULT_ALIGNMENT;
    let mut h = Vec::new();
    h.extend_from_slice(b"GGUF");
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut h, key);
        h.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
        put_value(&mut h, value);
    }
    let mut regions = Vec::with_capacity(tensors.len());
    let mut position = 0u64;
    for t in tensors {
        check_tensor(t)?;
        put_string(&mut h, &t.name);
        h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&t.ty.id().to_le_bytes());
        h.extend_from_slice(&position.to_le_bytes());
        regions.push((position, t.size()));
        position += t.size().div_ceil(alignment) * alignment;
    }
    h.resize((h.len() as u64).div_ceil(alignment) as usize * alignment as usize, 0);
    Ok(FileLayout::new(h, &regions, position))
}

fn check_tensor(t: &TensorSpec) -> Result<()> {
    let problem = if t.name.len() > MAX_NAME {
        Some(format!("its name is over {MAX_NAME} bytes"))
    } else if !(1..=4).contains(&t.dims.len()) {
        Some(format!("it has {} dimensions (GGUF allows 1 to 4)", t.dims.len()))
    } else if !t.dims[0].is_multiple_of(t.ty.block_size() as u64) {
        Some(format!(
            "its rows of {} are not a whole number of {}-element {} blocks",
            t.dims[0],
            t.ty.block_size(),
            t.ty
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(GgufError::Convert(format!("cannot write tensor {} as GGUF: {p}", t.name))),
        None => Ok(()),
    }
}

fn put_string(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => h.push(*v),
        Value::I8(v) => h.push(*v as u8),
        Value::U16(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => h.push(u8::from(*v)),
        Value::String(s) => put_string(h, s),
        Value::Array(elem, items) => {
            h.extend_from_slice(&(*elem as u32).to_le_bytes());
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(h, item);
            }
        }
        Value::U64(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => h.extend_from_slice(&v.to_le_bytes()),
    }
}
