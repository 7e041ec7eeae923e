//! Input models of either kind — a Hugging Face safetensors folder or a GGUF file — behind
//! one interface: a `config.json`, tensor names, and element ranges read as `f32` in
//! Hugging Face order (GGUF tensors dequantized and un-permuted on the fly).

use std::path::{Path, PathBuf};

use amalgam_gguf::{GgmlType, GgufModel};
use amalgam_tensors::dtype::decode_f32;
use amalgam_tensors::{DType, ModelFolder, TensorRef};
use serde_json::{Map, Value};

use crate::error::{MergeError, Result};

/// An open input model.
pub enum Model {
    Folder(ModelFolder),
    Gguf(Box<GgufModel>),
}

/// One tensor of an input model.
pub enum Input<'a> {
    Safetensors(TensorRef<'a>),
    Gguf { model: &'a GgufModel, name: &'a str, shape: &'a [usize], ty: GgmlType, bytes: u64 },
}

impl Model {
    /// Opens a model folder, or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Model> {
        if path.is_file() {
            let model = GgufModel::open(path).map_err(|e| MergeError::Model {
                model: path.display().to_string(),
                message: e.to_string(),
            })?;
            return Ok(Model::Gguf(Box::new(model)));
        }
        Ok(Model::Folder(ModelFolder::open(path)?))
    }

    /// The model's `config.json` (rebuilt from metadata for GGUF).
    pub fn config(&self) -> &Map<String, Value> {
        match self {
            Model::Folder(f) => f.config(),
            Model::Gguf(g) => g.config(),
        }
    }

    /// Whether the model has a tensor of this (Hugging Face) name.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Model::Folder(f) => f.contains(name),
            Model::Gguf(g) => g.contains(name),
        }
    }

    /// A tensor by Hugging Face name.
    pub fn tensor<'a>(&'a self, name: &'a str) -> Result<Option<Input<'a>>> {
        Ok(match self {
            Model::Folder(f) => f.tensor(name)?.map(Input::Safetensors),
            Model::Gguf(g) => match (g.shape(name), g.info(name)) {
                (Some(shape), Some(info)) => {
                    Some(Input::Gguf { model: g, name, shape, ty: info.ty, bytes: info.size })
                }
                _ => None,
            },
        })
    }

    /// An auxiliary file of a folder model (`README.md`, tokenizer files).
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        match self {
            Model::Folder(f) => f.file(name),
            Model::Gguf(_) => None,
        }
    }
}

impl Input<'_> {
    /// Shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        match self {
            Input::Safetensors(t) => &t.info.shape,
            Input::Gguf { shape, .. } => shape,
        }
    }

    /// The element type the values have: the stored float type, or F32 for quantized
    /// GGUF blocks (they dequantize to f32).
    pub fn dtype(&self) -> DType {
        match self {
            Input::Safetensors(t) => t.info.dtype,
            Input::Gguf { ty: GgmlType::F16, .. } => DType::F16,
            Input::Gguf { ty: GgmlType::BF16, .. } => DType::BF16,
            Input::Gguf { .. } => DType::F32,
        }
    }

    /// Bytes stored on disk.
    pub fn stored_bytes(&self) -> u64 {
        match self {
            Input::Safetensors(t) => (t.info.end - t.info.start) as u64,
            Input::Gguf { bytes, .. } => *bytes,
        }
    }

    /// The raw little-endian bytes of elements `start..start + n`, when they are stored
    /// plainly (safetensors); `None` for GGUF.
    pub fn raw(&self, start: usize, n: usize) -> Option<&[u8]> {
        match self {
            Input::Safetensors(t) => {
                let size = t.info.dtype.size();
                Some(&t.bytes()[start * size..(start + n) * size])
            }
            Input::Gguf { .. } => None,
        }
    }

    /// Fills `out` with elements `start..` as `f32`.
    pub fn read(&self, start: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Input::Safetensors(t) => {
                let size = t.info.dtype.size();
                decode_f32(t.info.dtype, &t.bytes()[start * size..(start + out.len()) * size], out);
                Ok(())
            }
            Input::Gguf { model, name, .. } => model
                .read(name, start, out)
                .map_err(|e| MergeError::Tensor(format!("reading {name} from GGUF: {e}"))),
        }
    }

    /// Drops the pages of elements `start..start + n` from the resident set.
    pub fn release(&self, start: usize, n: usize) {
        if let Input::Safetensors(t) = self {
            let size = t.info.dtype.size();
            let begin = t.info.start + start * size;
            t.file.release(begin, begin + n * size);
        }
    }
}
