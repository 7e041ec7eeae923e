//! An MLX folder dequantized as `mlx_lm.convert -d` does (`docs/mlx-format.md` §5–6):
//! each affine weight back to the dtype of its scales, `round(round(q · scale) + bias)`,
//! each block-mode weight to bfloat16,
//! the other tensors as stored, written in mlx's files (module-tree order, 5 GiB shards,
//! mlx's data order) with the config's quantization removed. Tensors are read one at a
//! time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use amalgam_tensors::dtype::{DType, decode_f32, encode_f32, round_to};
use serde_json::{Map, Value};

use crate::config::converted;
use crate::error::{MlxError, Result};
use crate::file::{Meta, index, shard, shard_names, weight_map, write_file};
use crate::header::{self, Stored};
use crate::method::Method;
use crate::tree::Tree;

/// Where a stored tensor's bytes are.
#[derive(Clone)]
struct Place {
    file: PathBuf,
    start: u64,
    len: usize,
}

/// What an output tensor is made from.
enum Source {
    Copy(Place),
    Dequantize {
        weight: Place,
        scales: Place,
        /// Affine only.
        biases: Option<Place>,
        method: Method,
        cols: usize,
        /// The output's: the scales' for affine, bfloat16 for the block modes.
        dtype: DType,
    },
}

struct Tensor {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    bytes: usize,
    source: Source,
}

/// The dequantized model, planned.
pub struct Plan {
    tensors: Vec<Tensor>,
    shards: Vec<Vec<usize>>,
    pub config: Map<String, Value>,
    pub index: String,
    pub bytes: usize,
}

fn dtype_of(name: &str, dtype: &str) -> Result<DType> {
    match dtype {
        "BF16" => Ok(DType::BF16),
        "F16" => Ok(DType::F16),
        "F32" => Ok(DType::F32),
        _ => Err(MlxError::Missing(name.to_owned())),
    }
}

/// Plans the dequantization of the MLX folder `dir`.
pub fn plan(dir: &Path) -> Result<Plan> {
    let read_json = |name: &str| amalgam_tensors::folder::read_json(&dir.join(name));
    let config = read_json("config.json")?;
    let config = config.as_object().filter(|c| c.contains_key("quantization"));
    let config = config.ok_or_else(|| MlxError::NotMlx(dir.to_owned()))?;
    let tree = Tree::of(config)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| MlxError::Read { path: dir.to_owned(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let mut stored: HashMap<String, (PathBuf, Stored)> = HashMap::new();
    for file in &files {
        for t in header::read(file)? {
            stored.insert(t.name.clone(), (file.clone(), t));
        }
    }
    let place = |name: &str| -> Result<(Place, &Stored)> {
        let (file, t) = stored.get(name).ok_or_else(|| MlxError::Missing(name.to_owned()))?;
        Ok((Place { file: file.clone(), start: t.start, len: t.bytes }, t))
    };
    let mut outputs = Vec::new();
    for name in stored.keys() {
        if name.ends_with(".scales") || name.ends_with(".biases") {
            continue;
        }
        if let Some(at) = tree.position(name, false)? {
            outputs.push((at, name.clone()));
        }
    }
    outputs.sort();
    let (mut tensors, mut parameters) = (Vec::new(), 0);
    for (_, name) in outputs {
        let (weight, t) = place(&name)?;
        let module = name.strip_suffix(".weight").unwrap_or(&name);
        let quantized = t.dtype == "U32" && stored.contains_key(&format!("{module}.scales"));
        let q = header::quantization(config, module)?.filter(|_| quantized);
        let Some(method) = q else {
            let numel = t.shape.iter().product::<usize>();
            let size = match t.dtype.as_str() {
                "U8" | "I8" | "BOOL" => Some(1),
                "BF16" | "F16" | "I16" | "U16" => Some(2),
                "F32" | "I32" | "U32" => Some(4),
                "F64" | "I64" | "U64" => Some(8),
                _ => None,
            };
            if size.is_some_and(|size| t.bytes != numel * size) {
                return Err(MlxError::Layer {
                    module: name.clone(),
                    reason: format!("{} bytes do not hold {:?} {}", t.bytes, t.shape, t.dtype),
                });
            }
            parameters += numel;
            let (dtype, shape, bytes) = (t.dtype.clone(), t.shape.clone(), t.bytes);
            tensors.push(Tensor {
                name: name.clone(),
                dtype,
                shape,
                bytes,
                source: Source::Copy(weight),
            });
            continue;
        };
        let (scales, s) = place(&format!("{module}.scales"))?;
        let (biases, dtype) = match method {
            Method::Affine(_) => {
                (Some(place(&format!("{module}.biases"))?.0), dtype_of(&name, &s.dtype)?)
            }
            Method::Fp(_) => (None, DType::BF16),
        };
        let rows = t.shape.first().copied().unwrap_or(0);
        let cols = t.shape.last().copied().unwrap_or(0) * 32 / method.bits() as usize;
        let scale_size = match method {
            Method::Affine(_) => dtype.size(),
            Method::Fp(_) => 1,
        };
        let fits = t.shape.len() == 2
            && method.fits(cols)
            && t.bytes == rows * method.words(cols) * 4
            && s.bytes == rows * method.groups(cols) * scale_size;
        if !fits {
            return Err(MlxError::Layer {
                module: module.to_owned(),
                reason: format!(
                    "its packed weight {:?} ({} bytes) and scales ({} bytes) do not fit {}-bit \
                     groups of {}",
                    t.shape,
                    t.bytes,
                    s.bytes,
                    method.bits(),
                    method.group_size()
                ),
            });
        }
        parameters += rows * cols;
        let source = Source::Dequantize { weight, scales, biases, method, cols, dtype };
        let bytes = rows * cols * dtype.size();
        tensors.push(Tensor {
            name,
            dtype: dtype.safetensors_name().to_owned(),
            shape: vec![rows, cols],
            bytes,
            source,
        });
    }
    let sizes: Vec<usize> = tensors.iter().map(|t| t.bytes).collect();
    let shards = shard(&sizes);
    let files = weight_map(&shards, |i| tensors[i].name.clone());
    let bytes = sizes.iter().sum();
    let generation = read_json("generation_config.json").ok();
    let config = converted(config, generation.as_ref().and_then(Value::as_object), None);
    Ok(Plan { tensors, shards, config, index: index(bytes, parameters, &files), bytes })
}

/// A stored tensor's bytes.
fn read(place: &Place) -> Result<Vec<u8>> {
    let io = |source| MlxError::Read { path: place.file.clone(), source };
    let mut file = File::open(&place.file).map_err(io)?;
    file.seek(SeekFrom::Start(place.start)).map_err(io)?;
    let mut bytes = vec![0u8; place.len];
    file.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes)
}

impl Plan {
    /// Writes the weights into `dir`; `progress(bytes)` after each tensor.
    pub fn write(&self, dir: &Path, progress: &dyn Fn(usize)) -> Result<()> {
        for (shard, file) in self.shards.iter().zip(shard_names(self.shards.len())) {
            let path = dir.join(file);
            let tensors: Vec<&Tensor> = shard.iter().map(|&i| &self.tensors[i]).collect();
            let metas: Vec<Meta> = tensors
                .iter()
                .map(|t| Meta { name: &t.name, dtype: &t.dtype, shape: &t.shape, len: t.bytes })
                .collect();
            write_file(&path, &metas, |k| make(tensors[k]).map(Cow::Owned), progress)?;
        }
        Ok(())
    }
}

/// An output tensor's bytes.
fn make(t: &Tensor) -> Result<Vec<u8>> {
    let Source::Dequantize { weight, scales, biases, method, cols, dtype } = &t.source else {
        let Source::Copy(place) = &t.source else { return Ok(Vec::new()) };
        return read(place);
    };
    let packed: Vec<u32> = read(weight)?
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    let (words, groups) = (method.words(*cols), method.groups(*cols));
    let rows = packed.len().checked_div(words).unwrap_or(0);
    let mut values = vec![0f32; rows * cols];
    let scale_bytes = read(scales)?;
    let bad = || MlxError::Missing(t.name.clone());
    match (method, biases) {
        (Method::Affine(affine), Some(biases)) => {
            let widen = |bytes: &[u8]| {
                let mut v = vec![0f32; bytes.len() / dtype.size()];
                decode_f32(*dtype, bytes, &mut v);
                v
            };
            let (scales, biases) = (widen(&scale_bytes), widen(&read(biases)?));
            for (r, row) in values.chunks_exact_mut(*cols).enumerate() {
                let (w, g) = (r * words..(r + 1) * words, r * groups..(r + 1) * groups);
                let (Some(p), Some(s), Some(b)) =
                    (packed.get(w), scales.get(g.clone()), biases.get(g))
                else {
                    return Err(bad());
                };
                affine.dequantize_row(p, s, b, |x| round_to(*dtype, x), row);
            }
        }
        (Method::Fp(fp), _) => {
            for (r, row) in values.chunks_exact_mut(*cols).enumerate() {
                let (w, g) = (r * words..(r + 1) * words, r * groups..(r + 1) * groups);
                let (Some(p), Some(s)) = (packed.get(w), scale_bytes.get(g)) else {
                    return Err(bad());
                };
                fp.dequantize_row(p, s, row);
            }
        }
        (Method::Affine(_), None) => return Err(bad()),
    }
    let mut out = vec![0u8; values.len() * dtype.size()];
    encode_f32(*dtype, &values, &mut out);
    Ok(out)
}
