//! A Hugging Face model of a class mlx_lm has (a folder, or any [`Source`]) to the weights of an MLX
//! model, as `mlx_lm.convert -q` writes them (`docs/mlx-format.md` §3–4): the tensors in the order of mlx_lm's module
//! tree, each linear layer and the embeddings quantized when their rows split into whole
//! groups, everything cast first to `--dtype` or the config's `torch_dtype`, shards of at
//! most 5 GiB of data, the index, and the config. Inputs are read one tensor at a time and
//! each shard is written in mlx's data order as it is quantized: a module whose scales come
//! before its weights is quantized twice rather than held.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use amalgam_tensors::dtype::{DType, encode_f32, round_slice};
use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::affine::Affine;
use crate::config::{Quantization, converted};
use crate::error::{MlxError, Result};
use crate::file::{Meta, index, shard, shard_names, weight_map, write_file};
use crate::fp::FpMode;
use crate::method::Method;
use crate::recipe::Recipe;
use crate::source::Source;
use crate::tree::Tree;

/// How to quantize.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The quantization of every layer a recipe does not choose for.
    pub method: Method,
    /// `--q-group-size` as given: `None` is written as `null` in a recipe's entries.
    pub group_size: Option<usize>,
    pub recipe: Option<Recipe>,
    /// `--dtype`, overriding the config's `torch_dtype`.
    pub dtype: Option<DType>,
}

/// What an output tensor holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    /// A stored tensor, cast.
    Copy,
    Weight,
    Scales,
    Biases,
}

/// One output tensor.
struct Tensor {
    name: String,
    /// The stored tensor it comes from.
    source: String,
    part: Part,
    /// The quantization of its module (quantized parts only).
    method: Option<Method>,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: usize,
}

/// Values per parallel work item when casting.
const ROWS: usize = 1 << 16;

/// A tensor's bytes, and the other parts of its module made with them.
type Made = (Vec<u8>, Vec<(Part, Vec<u8>)>);

/// The converted model, planned: its tensors by shard, and its files' small contents.
pub struct Plan {
    tensors: Vec<Tensor>,
    shards: Vec<Vec<usize>>,
    /// The dtype every floating tensor is cast to, if any.
    cast: Option<DType>,
    pub config: Map<String, Value>,
    pub index: String,
    pub bytes: usize,
}

/// Whether a stored tensor is a linear layer's or the embeddings' weight.
fn quantizable(name: &str) -> bool {
    name.ends_with("_proj.weight")
        || name.ends_with("embed_tokens.weight")
        || name == "lm_head.weight"
}

/// The dtype floating tensors are cast to: `--dtype`, else the config's `torch_dtype`.
fn cast(config: &Map<String, Value>, dtype: Option<DType>) -> Option<DType> {
    dtype.or_else(|| {
        let name = config.get("torch_dtype")?.as_str()?;
        DType::from_torch_name(name).filter(|d| *d != DType::F64)
    })
}

/// The parts of a quantized module: its packed `weight`, its `scales` (in `dtype`, or
/// bytes for the block modes) and, for affine, its `biases`.
fn quantized(
    name: &str,
    path: &str,
    method: Method,
    dtype: DType,
    rows: usize,
    cols: usize,
) -> Vec<Tensor> {
    let (words, groups) = (method.words(cols), method.groups(cols));
    let (scale_type, scale_size) = match method {
        Method::Affine(_) => (dtype.safetensors_name(), dtype.size()),
        Method::Fp(_) => ("U8", 1),
    };
    let mut parts = vec![
        (Part::Weight, "weight", "U32", words, 4),
        (Part::Scales, "scales", scale_type, groups, scale_size),
    ];
    if method.biased() {
        parts.push((Part::Biases, "biases", scale_type, groups, scale_size));
    }
    let tensor =
        |(part, suffix, dtype, width, size): (Part, &str, &'static str, usize, usize)| Tensor {
            name: format!("{path}.{suffix}"),
            source: name.to_owned(),
            part,
            method: Some(method),
            dtype,
            shape: vec![rows, width],
            bytes: rows * width * size,
        };
    parts.into_iter().map(tensor).collect()
}

/// Plans the conversion of the model `source`, whose `config.json` is `config` and
/// `generation_config.json` (if any) `generation`.
pub fn plan(
    source: &dyn Source,
    config: &Map<String, Value>,
    generation: Option<&Map<String, Value>>,
    options: &Options,
) -> Result<Plan> {
    let tree = Tree::of(config)?;
    let layers = config.get("num_hidden_layers").and_then(Value::as_u64).unwrap_or(0) as usize;
    let names = source.names();
    let tied = tree.tied(config, names.iter().any(|n| n == "lm_head.weight"))?;
    let top = options.method;
    if options.recipe.is_some() && !matches!(top, Method::Affine(_)) {
        return Err(MlxError::RecipeMode);
    }
    let cast = cast(config, options.dtype);
    let mut stored = Vec::new();
    for name in names {
        if let Some(at) = tree.position(&name, tied)? {
            stored.push((at, name));
        }
    }
    stored.sort();
    let (mut tensors, mut layers_q, mut parameters) = (Vec::new(), Vec::new(), 0);
    for (_, name) in stored {
        let (stored, shape) = source.info(&name)?.ok_or_else(|| MlxError::Missing(name.clone()))?;
        let dtype = cast.unwrap_or(stored);
        if dtype == DType::F64 {
            return Err(MlxError::Float64(name));
        }
        let numel: usize = shape.iter().product();
        parameters += numel;
        let cols = shape.last().copied().unwrap_or(0);
        let rows = numel.checked_div(cols).unwrap_or(0);
        let path = name.strip_suffix(".weight").unwrap_or(&name).to_owned();
        if !(quantizable(&name) && shape.len() == 2 && top.fits(cols)) {
            let bytes = numel * dtype.size();
            let (name, part, method) = (name.clone(), Part::Copy, None);
            let dtype = dtype.safetensors_name();
            let source = name.clone();
            tensors.push(Tensor { name, source, part, method, dtype, shape, bytes });
            continue;
        }
        let method = match options.recipe {
            Some(r) => {
                let bits = r.bits(&path, layers);
                layers_q.push((path.clone(), options.group_size, bits));
                Method::Affine(Affine::new(bits, top.group_size())?)
            }
            None => top,
        };
        if method == Method::Fp(FpMode::Nvfp4) && !numel.is_multiple_of(32) {
            return Err(MlxError::Nvfp4Size(name));
        }
        tensors.extend(quantized(&name, &path, method, dtype, rows, cols));
    }
    let sizes: Vec<usize> = tensors.iter().map(|t| t.bytes).collect();
    let shards = shard(&sizes);
    let files = weight_map(&shards, |i| tensors[i].name.clone());
    let bytes = tensors.iter().map(|t| t.bytes).sum();
    let quantization = Quantization {
        group_size: top.group_size(),
        bits: top.bits(),
        mode: top.mode(),
        layers: layers_q,
    };
    let config = converted(config, generation, Some(&quantization));
    Ok(Plan { tensors, shards, cast, config, index: index(bytes, parameters, &files), bytes })
}

impl Plan {
    /// Each weight file: its name, bytes of tensor data and tensor count.
    pub fn files(&self) -> Vec<(String, u64, usize)> {
        let names = shard_names(self.shards.len());
        let size = |shard: &[usize]| shard.iter().map(|&i| self.tensors[i].bytes as u64).sum();
        names.into_iter().zip(&self.shards).map(|(n, s)| (n, size(s), s.len())).collect()
    }

    /// Writes the weights into `dir` (the shards); `progress(bytes)` after each tensor.
    pub fn write(&self, source: &dyn Source, dir: &Path, progress: &dyn Fn(usize)) -> Result<()> {
        for (shard, file) in self.shards.iter().zip(shard_names(self.shards.len())) {
            self.write_shard(source, shard, &dir.join(file), progress)?;
        }
        Ok(())
    }

    fn write_shard(
        &self,
        source: &dyn Source,
        shard: &[usize],
        path: &Path,
        progress: &dyn Fn(usize),
    ) -> Result<()> {
        let tensors: Vec<&Tensor> = shard.iter().map(|&i| &self.tensors[i]).collect();
        let metas: Vec<Meta> = tensors
            .iter()
            .map(|t| Meta { name: &t.name, dtype: t.dtype, shape: &t.shape, len: t.bytes })
            .collect();
        // Parts of this file not written yet; scales and biases made ahead of their turn
        // wait in `waiting`, weights are made again.
        let mut pending: HashSet<(&str, Part)> =
            tensors.iter().map(|t| (t.source.as_str(), t.part)).collect();
        let mut waiting: HashMap<(String, Part), Vec<u8>> = HashMap::new();
        let data = |k: usize| {
            let t = tensors[k];
            pending.remove(&(t.source.as_str(), t.part));
            if let Some(bytes) = waiting.remove(&(t.source.clone(), t.part)) {
                return Ok(Cow::Owned(bytes));
            }
            let (bytes, others) = self.produce(source, t)?;
            for (part, b) in others {
                if pending.contains(&(t.source.as_str(), part)) {
                    waiting.insert((t.source.clone(), part), b);
                }
            }
            Ok(Cow::Owned(bytes))
        };
        write_file(path, &metas, data, progress)
    }

    /// Tensor `t`'s bytes, and for a quantized module its other small parts (scales,
    /// biases) made with it.
    fn produce(&self, source: &dyn Source, t: &Tensor) -> Result<Made> {
        let missing = || MlxError::Missing(t.source.clone());
        let (stored, shape) = source.info(&t.source)?.ok_or_else(missing)?;
        let mut values = vec![0f32; shape.iter().product()];
        source.read(&t.source, &mut values)?;
        let dtype = self.cast.unwrap_or(stored);
        let encode = |v: &[f32]| {
            let mut out = vec![0u8; v.len() * dtype.size()];
            out.par_chunks_mut(ROWS * dtype.size())
                .zip(v.par_chunks(ROWS))
                .for_each(|(o, v)| encode_f32(dtype, v, o));
            out
        };
        let Some(method) = t.method else {
            return Ok((encode(&values), Vec::new()));
        };
        // Quantized from the cast values, as mlx_lm casts before it quantizes.
        if dtype != stored {
            values.par_chunks_mut(ROWS).for_each(|v| round_slice(dtype, v));
        }
        let cols = shape.last().copied().unwrap_or(0);
        let (words, groups) = (method.words(cols), method.groups(cols));
        let rows = values.len().checked_div(cols).unwrap_or(0);
        let mut packed = vec![0u32; rows * words];
        let small = match method {
            Method::Affine(affine) => {
                let (mut scales, mut biases) =
                    (vec![0f32; rows * groups], vec![0f32; rows * groups]);
                let rows = values
                    .par_chunks_exact(cols.max(1))
                    .zip(packed.par_chunks_exact_mut(words.max(1)));
                rows.zip(
                    scales
                        .par_chunks_exact_mut(groups.max(1))
                        .zip(biases.par_chunks_exact_mut(groups.max(1))),
                )
                .for_each(|((row, p), (s, b))| affine.quantize_row(row, p, s, b));
                vec![(Part::Scales, encode(&scales)), (Part::Biases, encode(&biases))]
            }
            Method::Fp(fp) => {
                let mut scales = vec![0u8; rows * groups];
                let rows = values
                    .par_chunks_exact(cols.max(1))
                    .zip(packed.par_chunks_exact_mut(words.max(1)));
                rows.zip(scales.par_chunks_exact_mut(groups.max(1)))
                    .for_each(|((row, p), s)| fp.quantize_row(dtype, row, p, s));
                vec![(Part::Scales, scales)]
            }
        };
        if t.part == Part::Weight {
            return Ok((packed.iter().flat_map(|w| w.to_le_bytes()).collect(), small));
        }
        let (mine, others): (Vec<_>, Vec<_>) = small.into_iter().partition(|(p, _)| *p == t.part);
        let bytes = mine.into_iter().next().map(|(_, b)| b).unwrap_or_default();
        Ok((bytes, others))
    }
}
