//! Input models of either kind — a Hugging Face safetensors folder or a GGUF file — behind
//! one interface: a `config.json`, tensor names, and element ranges read as `f32` in
//! Hugging Face order (GGUF tensors dequantized and un-permuted on the fly).

use std::path::{Path, PathBuf};

use amalgam_gguf::{GgmlType, GgufModel};
use amalgam_tensors::dtype::decode_f32;
use amalgam_tensors::{DType, ModelFolder, TensorRef};
use serde_json::{Map, Value};

use crate::error::{MergeError, Result};
use crate::lora::{Adapter, Delta};

/// An open input model.
pub enum Model {
    Folder(ModelFolder),
    Gguf(Box<GgufModel>),
    /// A model with a LoRA adapter applied as its tensors are read.
    Adapted(Box<Model>, Box<Adapter>),
}

/// One tensor of an input model.
pub enum Input<'a> {
    Safetensors(TensorRef<'a>),
    Gguf {
        model: &'a GgufModel,
        name: &'a str,
        shape: &'a [usize],
        ty: GgmlType,
        bytes: u64,
    },
    /// A base tensor changed by an adapter; values keep the base tensor's dtype.
    Adapted {
        base: Box<Input<'a>>,
        adapter: &'a Adapter,
        change: Change<'a>,
    },
}

/// How an adapter changes a base tensor.
pub enum Change<'a> {
    /// Adds a low-rank update.
    Delta(&'a Delta),
    /// Replaces it with a saved tensor (`modules_to_save`), cast to the base's dtype.
    Replace(TensorRef<'a>),
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

    /// Opens a model with the LoRA adapter in `adapter` applied, checking that every
    /// weight the adapter changes exists in the model with a shape that fits.
    pub fn open_adapted(path: &Path, adapter: &Path) -> Result<Model> {
        let base = Model::open(path)?;
        let adapter = Adapter::open(adapter)?;
        for name in adapter.targets() {
            let Some(input) = base.tensor(name)? else {
                return Err(MergeError::Model {
                    model: adapter.folder().display().to_string(),
                    message: format!(
                        "it changes {name}, which {} does not have; the adapter was trained \
                         for another model",
                        path.display()
                    ),
                });
            };
            if let Some(delta) = adapter.delta(name) {
                adapter.check_shape(name, delta, input.shape())?;
            }
        }
        Ok(Model::Adapted(Box::new(base), Box::new(adapter)))
    }

    /// The model's `config.json` (rebuilt from metadata for GGUF).
    pub fn config(&self) -> &Map<String, Value> {
        match self {
            Model::Folder(f) => f.config(),
            Model::Gguf(g) => g.config(),
            Model::Adapted(base, _) => base.config(),
        }
    }

    /// Whether the model has a tensor of this (Hugging Face) name.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Model::Folder(f) => f.contains(name),
            Model::Gguf(g) => g.contains(name),
            Model::Adapted(base, _) => base.contains(name),
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
            Model::Adapted(base, adapter) => {
                let change = match adapter.replacement(name)? {
                    Some((file, info)) => Some(Change::Replace(TensorRef { file, info })),
                    None => adapter.delta(name).map(Change::Delta),
                };
                match (base.tensor(name)?, change) {
                    (Some(base), Some(change)) => {
                        Some(Input::Adapted { base: Box::new(base), adapter, change })
                    }
                    (input, _) => input,
                }
            }
        })
    }

    /// An auxiliary file of a folder model (`README.md`, tokenizer files).
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        match self {
            Model::Folder(f) => f.file(name),
            Model::Gguf(_) => None,
            Model::Adapted(base, _) => base.file(name),
        }
    }
}

impl Input<'_> {
    /// Shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        match self {
            Input::Safetensors(t) => &t.info.shape,
            Input::Gguf { shape, .. } => shape,
            Input::Adapted { change: Change::Replace(t), .. } => &t.info.shape,
            Input::Adapted { base, .. } => base.shape(),
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
            Input::Adapted { base, .. } => base.dtype(),
        }
    }

    /// Bytes stored on disk.
    pub fn stored_bytes(&self) -> u64 {
        match self {
            Input::Safetensors(t) => (t.info.end - t.info.start) as u64,
            Input::Gguf { bytes, .. } => *bytes,
            Input::Adapted { base, .. } => base.stored_bytes(),
        }
    }

    /// The raw little-endian bytes of elements `start..start + n`, when they are stored
    /// plainly (safetensors); `None` for GGUF and adapted tensors.
    pub fn raw(&self, start: usize, n: usize) -> Option<&[u8]> {
        match self {
            Input::Safetensors(t) => {
                let size = t.info.dtype.size();
                Some(&t.bytes()[start * size..(start + n) * size])
            }
            Input::Gguf { .. } | Input::Adapted { .. } => None,
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
            Input::Adapted { base, adapter, change: Change::Delta(delta) } => {
                base.read(start, out)?;
                let cols = base.shape().last().copied().unwrap_or(1).max(1);
                adapter.apply(delta, cols, start, out, base.dtype())
            }
            Input::Adapted { base, change: Change::Replace(t), .. } => {
                Input::Safetensors(TensorRef { file: t.file, info: t.info }).read(start, out)?;
                amalgam_tensors::dtype::round_slice(base.dtype(), out);
                Ok(())
            }
        }
    }

    /// Drops the pages of elements `start..start + n` from the resident set.
    pub fn release(&self, start: usize, n: usize) {
        match self {
            Input::Safetensors(t) => {
                let size = t.info.dtype.size();
                let begin = t.info.start + start * size;
                t.file.release(begin, begin + n * size);
            }
            Input::Adapted { base, change: Change::Delta(_), .. } => base.release(start, n),
            Input::Adapted { change: Change::Replace(t), .. } => {
                Input::Safetensors(TensorRef { file: t.file, info: t.info }).release(start, n)
            }
            Input::Gguf { .. } => {}
        }
    }
}
