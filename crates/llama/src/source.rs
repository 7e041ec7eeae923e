//! Where weights come from: a Hugging Face folder (safetensors) or a GGUF file, seen
//! through one interface that hands out the stored bytes of a tensor by its Hugging Face
//! name, without converting or copying them.

use std::path::Path;

use amalgam_gguf::{GgmlType, GgufModel};
use amalgam_tensors::{DType, ModelFolder};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// How a source lays out the rows of Q and K, which decides how RoPE pairs elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Hugging Face: element `i` pairs with `i + head_dim/2` (rotate-half).
    Halves,
    /// llama.cpp's GGUF llama: rows permuted per head so element `2i` pairs with `2i + 1`.
    Pairs,
}

/// A tensor as stored: its type, shape (outermost first) and bytes.
#[derive(Clone, Copy, Debug)]
pub struct RawTensor<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// 1 for vectors, 2 for matrices.
    pub dims: usize,
    pub data: &'a [u8],
}

/// A store of named tensors with a `config.json`.
pub trait TensorSource: Sync {
    /// The file or folder, for messages.
    fn path(&self) -> &Path;
    /// The model's `config.json` (rebuilt from metadata for GGUF).
    fn config(&self) -> &Map<String, Value>;
    /// The tensor of this Hugging Face name, if the source has it.
    fn tensor(&self, name: &str) -> Result<Option<RawTensor<'_>>>;
    /// How Q and K rows are laid out.
    fn rope_style(&self) -> RopeStyle;
    /// llama.cpp's per-frequency RoPE divisors (`rope_freqs.weight`), if stored.
    fn rope_freqs(&self) -> Result<Option<Vec<f32>>>;
}

/// The shape of a tensor as (rows, cols, dims), for vectors and matrices only.
fn matrix_shape(name: &str, shape: &[usize]) -> Result<(usize, usize, usize)> {
    match *shape {
        [n] => Ok((1, n, 1)),
        [rows, cols] => Ok((rows, cols, 2)),
        _ => Err(Error::Tensor {
            name: name.to_owned(),
            reason: format!("has shape {shape:?}; the engine expects a vector or a matrix"),
        }),
    }
}

impl TensorSource for ModelFolder {
    fn path(&self) -> &Path {
        self.root()
    }

    fn config(&self) -> &Map<String, Value> {
        ModelFolder::config(self)
    }

    fn tensor(&self, name: &str) -> Result<Option<RawTensor<'_>>> {
        let Some(t) = ModelFolder::tensor(self, name)? else { return Ok(None) };
        let ty = match t.info.dtype {
            DType::F32 => GgmlType::F32,
            DType::F16 => GgmlType::F16,
            DType::BF16 => GgmlType::BF16,
            other => {
                return Err(Error::Tensor {
                    name: name.to_owned(),
                    reason: format!("is {other}; the engine runs float32, float16 and bfloat16"),
                });
            }
        };
        let (rows, cols, dims) = matrix_shape(name, &t.info.shape)?;
        let data = t.file.bytes(t.info.start, t.info.end);
        Ok(Some(RawTensor { ty, rows, cols, dims, data }))
    }

    fn rope_style(&self) -> RopeStyle {
        RopeStyle::Halves
    }

    fn rope_freqs(&self) -> Result<Option<Vec<f32>>> {
        Ok(None)
    }
}

impl TensorSource for GgufModel {
    fn path(&self) -> &Path {
        self.file().path()
    }

    fn config(&self) -> &Map<String, Value> {
        GgufModel::config(self)
    }

    fn tensor(&self, name: &str) -> Result<Option<RawTensor<'_>>> {
        let Some((info, data)) = self.raw(name) else { return Ok(None) };
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let (rows, cols, dims) = matrix_shape(name, &shape)?;
        Ok(Some(RawTensor { ty: info.ty, rows, cols, dims, data }))
    }

    fn rope_style(&self) -> RopeStyle {
        RopeStyle::Pairs
    }

    fn rope_freqs(&self) -> Result<Option<Vec<f32>>> {
        let Some((info, data)) = self.gguf_tensor("rope_freqs.weight") else { return Ok(None) };
        if info.ty != GgmlType::F32 {
            return Err(Error::Tensor {
                name: "rope_freqs.weight".into(),
                reason: format!("is {}; llama.cpp stores it as F32", info.ty),
            });
        }
        Ok(Some(
            data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        ))
    }
}
