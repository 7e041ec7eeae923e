//! Input models of either kind — a Hugging Face safetensors folder or a GGUF file — behind
//! one interface: a `config.json`, tensor names, and element ranges read as `f32` in
//! Hugging Face order (GGUF tensors dequantized and un-permuted on the fly).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use amalgam_gguf::{GgmlType, GgufModel};
use amalgam_tensors::dtype::decode_f32;
use amalgam_tensors::{DType, ModelFolder, TensorRef};
use serde_json::{Map, Value};

use crate::error::{MergeError, Result};
use crate::lora::{Adapter, Delta};
use crate::vocab::{Row, Vocabulary};

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
    /// One model's embedding rows rearranged to a merged vocabulary.
    Aligned {
        set: Arc<AlignedSet<'a>>,
        own: usize,
    },
}

/// The inputs of one vocabulary-indexed tensor, with the merged vocabulary's row sources
/// for each.
pub struct AlignedSet<'a> {
    inputs: Vec<Input<'a>>,
    /// For each input, the source of each output row.
    rows: Vec<&'a [Row]>,
    /// Input position of each merged model (by merge index), if it is an input here.
    positions: Vec<Option<usize>>,
    /// Rows of the real vocabulary (the rest are padding).
    real: usize,
    shape: [usize; 2],
    /// Each input's mean real row, for padding rows, computed on first use.
    pad_means: Vec<OnceLock<Vec<f32>>>,
}

/// How an adapter changes a base tensor, in PEFT's order: a saved tensor replaces it
/// (`modules_to_save`, or an embedding's `base_layer` saved with its update), cast to the
/// base's dtype; then a low-rank update is added.
pub struct Change<'a> {
    pub replace: Option<TensorRef<'a>>,
    pub delta: Option<&'a Delta>,
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
                let shape = match adapter.replacement(name)? {
                    Some((_, info)) => info.shape.as_slice(),
                    None => input.shape(),
                };
                adapter.check_shape(name, delta, shape)?;
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
                let replace =
                    adapter.replacement(name)?.map(|(file, info)| TensorRef { file, info });
                let change = Change { replace, delta: adapter.delta(name) };
                match base.tensor(name)? {
                    Some(base) if change.replace.is_some() || change.delta.is_some() => {
                        Some(Input::Adapted { base: Box::new(base), adapter, change })
                    }
                    input => input,
                }
            }
        })
    }

    /// The model without its adapter, if it has one.
    pub fn unadapted(&self) -> &Model {
        match self {
            Model::Adapted(base, _) => base.unadapted(),
            other => other,
        }
    }

    /// A tokenizer file's bytes: read from a folder, or rebuilt from GGUF metadata.
    pub fn tokenizer_file(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Model::Folder(f) => std::fs::read(f.file(name)?).ok(),
            Model::Gguf(g) => {
                g.tokenizer_files()?.into_iter().find(|(n, _)| *n == name).map(|(_, b)| b)
            }
            Model::Adapted(base, _) => base.tokenizer_file(name),
        }
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
            Input::Adapted { change: Change { replace: Some(t), .. }, .. } => &t.info.shape,
            Input::Adapted { base, .. } => base.shape(),
            Input::Aligned { set, .. } => &set.shape,
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
            Input::Aligned { set, own } => set.inputs[*own].dtype(),
        }
    }

    /// Bytes stored on disk.
    pub fn stored_bytes(&self) -> u64 {
        match self {
            Input::Safetensors(t) => (t.info.end - t.info.start) as u64,
            Input::Gguf { bytes, .. } => *bytes,
            Input::Adapted { base, .. } => base.stored_bytes(),
            Input::Aligned { set, own } => set.inputs[*own].stored_bytes(),
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
            Input::Gguf { .. } | Input::Adapted { .. } | Input::Aligned { .. } => None,
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
            Input::Adapted { base, adapter, change } => {
                match &change.replace {
                    Some(t) => {
                        Input::Safetensors(TensorRef { file: t.file, info: t.info })
                            .read(start, out)?;
                        amalgam_tensors::dtype::round_slice(base.dtype(), out);
                    }
                    None => base.read(start, out)?,
                }
                match change.delta {
                    Some(delta) => {
                        let cols = self.shape().last().copied().unwrap_or(1).max(1);
                        adapter.apply(delta, cols, start, out, base.dtype())
                    }
                    None => Ok(()),
                }
            }
            Input::Aligned { set, own } => set.read(*own, start, out),
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
            Input::Adapted { change: Change { replace: Some(t), .. }, .. } => {
                Input::Safetensors(TensorRef { file: t.file, info: t.info }).release(start, n)
            }
            Input::Adapted { base, .. } => base.release(start, n),
            Input::Gguf { .. } | Input::Aligned { .. } => {}
        }
    }
}

impl<'a> AlignedSet<'a> {
    /// Aligns the inputs of a vocabulary-indexed tensor (`models[i]` is input `i`'s merge
    /// index) to `vocab`; returns one input per model, each with the merged row count.
    pub fn align(
        name: &str,
        inputs: Vec<Input<'a>>,
        models: &[usize],
        vocab: &'a Vocabulary,
    ) -> Result<Vec<Input<'a>>> {
        let cols = inputs.first().map_or(0, |i| i.shape().get(1).copied().unwrap_or(1));
        let mut positions = vec![None; vocab.rows.len()];
        for (i, &m) in models.iter().enumerate() {
            positions[m] = Some(i);
        }
        let set = AlignedSet {
            rows: models.iter().map(|&m| vocab.rows[m].as_slice()).collect(),
            positions,
            real: vocab.real,
            shape: [vocab.padded, cols],
            pad_means: models.iter().map(|_| OnceLock::new()).collect(),
            inputs,
        };
        set.check(name)?;
        let set = Arc::new(set);
        Ok((0..models.len()).map(|own| Input::Aligned { set: Arc::clone(&set), own }).collect())
    }

    /// Checks that the inputs are matrices of one width and that every row source names
    /// an input of this tensor and a row it has.
    fn check(&self, name: &str) -> Result<()> {
        let shapes: Vec<&[usize]> = self.inputs.iter().map(Input::shape).collect();
        if shapes.iter().any(|s| s.len() != 2 || s[1] != self.shape[1]) {
            return Err(MergeError::Tensor(format!(
                "{name}: vocabulary-indexed inputs must be matrices of one width; found {shapes:?}"
            )));
        }
        let check_one = |model: usize, row: usize| -> Result<()> {
            let rows_there = self.positions[model].map(|p| shapes[p][0]);
            if rows_there.is_none_or(|n| row >= n) {
                return Err(MergeError::Tensor(format!(
                    "{name}: the merged vocabulary takes row {row} of input model {model}, \
                     which this tensor's inputs do not have (rows: {rows_there:?}); the model's \
                     vocab_size does not match its embeddings"
                )));
            }
            Ok(())
        };
        for row in self.rows.iter().flat_map(|r| r.iter()) {
            match row {
                Row::Model { model, row } => check_one(*model, *row)?,
                Row::Mean(list) => list.iter().try_for_each(|&(m, r)| check_one(m, r))?,
                Row::Zero | Row::PadMean => {}
            }
        }
        Ok(())
    }

    /// Elements `start..` of input `own`'s aligned tensor.
    fn read(&self, own: usize, start: usize, out: &mut [f32]) -> Result<()> {
        let cols = self.shape[1].max(1);
        let mut row_buf = vec![0f32; cols];
        let mut done = 0;
        while done < out.len() {
            let (row, col) = ((start + done) / cols, (start + done) % cols);
            let n = (cols - col).min(out.len() - done);
            self.row(own, row, &mut row_buf)?;
            out[done..done + n].copy_from_slice(&row_buf[col..col + n]);
            done += n;
        }
        // Most rows map to the same rows of the input's own tensor: release those pages,
        // as plain reads do, so aligned embeddings do not stay resident.
        let own_len = self.inputs[own].shape().iter().product::<usize>();
        if start < own_len {
            self.inputs[own].release(start, out.len().min(own_len - start));
        }
        Ok(())
    }

    /// Row `r` of model `model`'s own tensor.
    fn source_row(&self, model: usize, r: usize, out: &mut [f32]) -> Result<()> {
        match self.positions[model] {
            Some(p) => self.inputs[p].read(r * out.len(), out),
            None => Err(MergeError::Tensor(format!("model {model} is not an input here"))),
        }
    }

    /// Output row `row` of input `own`.
    fn row(&self, own: usize, row: usize, out: &mut [f32]) -> Result<()> {
        let dtype = self.inputs[own].dtype();
        match &self.rows[own][row] {
            Row::Model { model, row } => {
                self.source_row(*model, *row, out)?;
                if self.positions[*model] != Some(own) {
                    amalgam_tensors::dtype::round_slice(dtype, out);
                }
            }
            Row::Zero => out.fill(0.0),
            Row::Mean(list) => {
                let mut sum = vec![0f32; out.len()];
                for &(model, r) in list {
                    self.source_row(model, r, out)?;
                    sum.iter_mut().zip(out.iter()).for_each(|(s, v)| *s += v);
                }
                let n = list.len().max(1) as f32;
                out.iter_mut().zip(&sum).for_each(|(o, s)| *o = s / n);
                amalgam_tensors::dtype::round_slice(dtype, out);
            }
            Row::PadMean => out.copy_from_slice(self.pad_mean(own)?),
        }
        Ok(())
    }

    /// The mean of input `own`'s real aligned rows, rounded to its dtype.
    fn pad_mean(&self, own: usize) -> Result<&[f32]> {
        if let Some(mean) = self.pad_means[own].get() {
            return Ok(mean);
        }
        let cols = self.shape[1];
        let mut sum = vec![0f64; cols];
        let mut row = vec![0f32; cols];
        for r in 0..self.real {
            self.row(own, r, &mut row)?;
            sum.iter_mut().zip(&row).for_each(|(s, v)| *s += f64::from(*v));
        }
        let mut mean: Vec<f32> = sum.iter().map(|s| (s / self.real.max(1) as f64) as f32).collect();
        amalgam_tensors::dtype::round_slice(self.inputs[own].dtype(), &mut mean);
        Ok(self.pad_means[own].get_or_init(|| mean))
    }
}
