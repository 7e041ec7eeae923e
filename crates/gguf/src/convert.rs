//! Hugging Face Llama → GGUF: which tensors the file holds (names, shapes, block types by
//! mixture), where each one's rows come from (with Q/K rows permuted per head), and a
//! streaming writer that quantizes a few rows at a time across threads.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use amalgam_tensors::dtype::decode_f32;
use amalgam_tensors::{ModelFolder, partial};
use rayon::prelude::*;
use serde_json::Value as Json;

use crate::error::{GgufError, Result};
use crate::ggml_type::GgmlType;
use crate::llama::LlamaParams;
use crate::mixture::{FileType, ModelShape, tensor_type};
use crate::names;
use crate::quant;
use crate::split;
use crate::tokenizer::{self, TokenizerFiles};
use crate::value::Value;
use crate::write::{self, TensorSpec};
use amalgam_tensors::{Parts, PositionedFile};

/// Elements converted per work item.
const CHUNK: usize = 1 << 18;

/// Where a GGUF tensor's values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Rows of an HF tensor of `rows × cols`; Q and K rows are reordered per head.
    Hf { name: String, rows: usize, cols: usize, permute_heads: Option<usize> },
    /// Values computed during conversion (`rope_freqs`).
    Values(Vec<f32>),
}

/// One tensor of the output file.
#[derive(Clone, Debug, PartialEq)]
pub struct OutTensor {
    pub spec: TensorSpec,
    pub source: Source,
}

/// Anything that can hand out rows of HF tensors as `f32`: a model folder, or a merge
/// computing them on the fly.
pub trait RowSource: Sync {
    /// Fills `out` (a whole number of rows) with rows `first..` of the HF tensor `name`.
    fn read_rows(&self, name: &str, first: usize, out: &mut [f32]) -> Result<()>;

    /// The finished bytes of the HF tensor `name` as type `ty` in GGUF's row order, when
    /// the source holds them (a GGUF tensor passed through unchanged): written as they
    /// are instead of rows being read and quantized (borrowed, or made, as for a scaled
    /// tensor whose block scales are multiplied).
    fn stored(&self, _name: &str, _ty: GgmlType) -> Option<Cow<'_, [u8]>> {
        None
    }
}

impl RowSource for ModelFolder {
    fn read_rows(&self, name: &str, first: usize, out: &mut [f32]) -> Result<()> {
        let t = self
            .tensor(name)?
            .ok_or_else(|| GgufError::Convert(format!("tensor {name} is missing")))?;
        let cols = t.info.shape.last().copied().unwrap_or(1).max(1);
        let size = t.info.dtype.size();
        let start = t.info.start + first * cols * size;
        let end = start + out.len() * size;
        if end > t.info.end {
            return Err(GgufError::Convert(format!("rows {first}.. of {name} are out of range")));
        }
        decode_f32(t.info.dtype, t.file.bytes(start, end), out);
        t.file.release(start, end);
        Ok(())
    }
}

/// The GGUF tensors of a Llama model whose HF tensors are `hf` (name, shape), in
/// llama.cpp's order: embeddings, then layer by layer, then the output.
pub fn plan(
    hf: &[(String, Vec<usize>)],
    params: &LlamaParams,
    ftype: FileType,
) -> Result<Vec<OutTensor>> {
    let tied = !hf.iter().any(|(n, _)| n == "lm_head.weight");
    let shape = ModelShape {
        n_layer: params.n_layer,
        n_head: params.n_head,
        n_head_kv: params.n_head_kv,
        tied,
    };
    let mut out = Vec::with_capacity(hf.len() + 1);
    for (name, dims) in hf {
        if name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        let gguf = names::hf_to_gguf(name).ok_or_else(|| {
            GgufError::Convert(format!(
                "tensor {name} is not part of a Llama model; cannot convert it to GGUF"
            ))
        })?;
        let (Some(&cols), Some(&first)) = (dims.last(), dims.first()) else {
            return Err(GgufError::Convert(format!(
                "tensor {name} has no dimensions (a 0-D tensor); a Llama weight has 1 or 2"
            )));
        };
        let gdims = names::gguf_dims(dims);
        let ty = tensor_type(ftype, &shape, &gguf, gdims.len(), cols as u64);
        let rows = dims.iter().product::<usize>() / cols.max(1);
        let heads = match names::permuted_heads(&gguf, params.n_head, params.n_head_kv) {
            Some(h) if dims.len() == 2 => Some(names::checked_heads(name, first, h)?),
            _ => None,
        };
        let source = Source::Hf { name: name.clone(), rows, cols, permute_heads: heads };
        out.push(OutTensor { spec: TensorSpec { name: gguf, dims: gdims, ty }, source });
    }
    if let Some(freqs) = params.rope_freqs() {
        let spec = TensorSpec {
            name: "rope_freqs.weight".into(),
            dims: vec![freqs.len() as u64],
            ty: GgmlType::F32,
        };
        out.push(OutTensor { spec, source: Source::Values(freqs) });
    }
    out.sort_by_key(|t| order_key(&t.spec.name));
    Ok(out)
}

/// Sort key: embeddings and RoPE first, then layers by number, then the output.
fn order_key(name: &str) -> (u8, usize) {
    match name.strip_prefix("blk.").and_then(|r| r.split('.').next()?.parse().ok()) {
        Some(layer) => (1, layer),
        None if name.starts_with("output") => (2, 0),
        None => (0, 0),
    }
}

/// Progress callbacks of [`write`].
pub struct Progress<'a> {
    /// Called with the bytes of each finished chunk.
    pub bytes: &'a (dyn Fn(u64) + Sync),
    /// Called when a whole tensor is written.
    pub tensor_done: &'a (dyn Fn() + Sync),
}

/// Progress kept across runs, so an interrupted write can be finished: which tensors an
/// earlier run wrote, and where this run's finished tensors are recorded.
pub trait Record: Sync {
    /// Whether an earlier run wrote tensor `index` (kept if its file is intact).
    fn earlier(&self, index: usize) -> bool;
    /// Tensor `index` is written; before it is recorded, `sync(tensors)` makes the bytes
    /// of `tensors` durable.
    fn finished(&self, index: usize, sync: &dyn Fn(&[usize]) -> Result<()>) -> Result<()>;
}

/// The files a write produces: each part's final path (one, or llama.cpp-style parts of
/// at most `split_max` bytes of tensor data), and which part holds each tensor.
fn parts(out: &Path, tensors: &[OutTensor], split_max: Option<u64>) -> (Vec<PathBuf>, Vec<usize>) {
    let specs: Vec<TensorSpec> = tensors.iter().map(|t| t.spec.clone()).collect();
    let part_of = match split_max {
        Some(max) => split::group(&specs, max),
        None => vec![0; specs.len()],
    };
    let count = part_of.last().map_or(1, |p| p + 1);
    let finals = match split_max {
        Some(_) => (0..count).map(|i| split::part_path(out, i, count)).collect(),
        None => vec![out.to_owned()],
    };
    (finals, part_of)
}

/// The files a write of `tensors` to `out` produces (one, or the split parts).
pub fn output_paths(out: &Path, tensors: &[OutTensor], split_max: Option<u64>) -> Vec<PathBuf> {
    parts(out, tensors, split_max).0
}

/// Writes `tensors` (rows from `source`) with `metadata` to `out`, or, with
/// `split_max`, to llama.cpp-style parts of at most that many bytes of tensor data. Files
/// are written under hidden names and renamed into place only when all are complete.
/// Returns the paths written.
pub fn write(
    out: &Path,
    metadata: &[(String, Value)],
    tensors: &[OutTensor],
    source: &dyn RowSource,
    progress: &Progress,
    split_max: Option<u64>,
) -> Result<Vec<PathBuf>> {
    let (finals, part_of) = parts(out, tensors, split_max);
    let partials: Vec<PathBuf> = finals.iter().map(|p| partial::sibling(p, "partial")).collect();
    let _tracked: Vec<partial::Tracked> = partials.iter().map(|p| partial::track(p)).collect();
    let file = Files { paths: &partials, part_of: &part_of, split: split_max.is_some() };
    if let Err(e) = write_parts(&file, metadata, tensors, source, progress, None) {
        for p in &partials {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    for (from, to) in partials.iter().zip(&finals) {
        partial::commit(from, to)?;
    }
    Ok(finals)
}

/// [`write`] into the folder `dir` (a resumable merge's staging folder) under the final
/// files' names, going on from what `record` says an earlier run wrote; the caller moves
/// the files into place. Returns the final paths.
#[allow(clippy::too_many_arguments)]
pub fn write_staged(
    dir: &Path,
    out: &Path,
    metadata: &[(String, Value)],
    tensors: &[OutTensor],
    source: &dyn RowSource,
    progress: &Progress,
    split_max: Option<u64>,
    record: &dyn Record,
) -> Result<Vec<PathBuf>> {
    let (finals, part_of) = parts(out, tensors, split_max);
    let mut staged = Vec::with_capacity(finals.len());
    for f in &finals {
        let name = f
            .file_name()
            .ok_or_else(|| GgufError::Convert(format!("{} does not name a file", f.display())))?;
        staged.push(dir.join(name));
    }
    let file = Files { paths: &staged, part_of: &part_of, split: split_max.is_some() };
    write_parts(&file, metadata, tensors, source, progress, Some(record))?;
    Ok(finals)
}

/// Where [`write_parts`] puts each tensor.
struct Files<'a> {
    paths: &'a [PathBuf],
    part_of: &'a [usize],
    split: bool,
}

fn write_parts(
    files: &Files,
    metadata: &[(String, Value)],
    tensors: &[OutTensor],
    source: &dyn RowSource,
    progress: &Progress,
    record: Option<&dyn Record>,
) -> Result<()> {
    let Files { paths, part_of, split } = *files;
    let mut slot = vec![0usize; tensors.len()];
    let mut layouts = Vec::with_capacity(paths.len());
    for (p, path) in paths.iter().enumerate() {
        let members: Vec<usize> = (0..tensors.len()).filter(|&i| part_of[i] == p).collect();
        for (k, &i) in members.iter().enumerate() {
            slot[i] = k;
        }
        let part_specs: Vec<TensorSpec> =
            members.iter().map(|&i| tensors[i].spec.clone()).collect();
        let meta = match split {
            true => split::part_metadata(metadata, p, paths.len(), tensors.len()),
            false => metadata.to_vec(),
        };
        layouts.push((path.clone(), write::layout(&meta, &part_specs)?));
    }
    let parts = Parts::open(layouts, part_of, |i| record.is_some_and(|r| r.earlier(i)))?;
    let sync = |done: &[usize]| Ok(parts.sync(done)?);
    tensors.par_iter().enumerate().try_for_each(|(i, t)| {
        if parts.kept(i) {
            (progress.bytes)(t.spec.size());
        } else {
            let file = parts
                .file_of(i)
                .ok_or_else(|| GgufError::Convert(format!("tensor {i} has no file")))?;
            write_tensor(file, slot[i], t, source, progress.bytes)?;
            if let Some(record) = record {
                record.finished(i, &sync)?;
            }
        }
        (progress.tensor_done)();
        Ok::<_, GgufError>(())
    })?;
    Ok(parts.finish()?)
}

/// Writes a tensor's finished bytes as they are, in parallel chunks.
fn write_stored(
    writer: &PositionedFile,
    index: usize,
    tensor: &OutTensor,
    name: &str,
    bytes: &[u8],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    if bytes.len() as u64 != tensor.spec.size() {
        return Err(GgufError::Convert(format!(
            "{name}: the stored {} bytes ({}) are not the {} the tensor takes",
            tensor.spec.ty,
            bytes.len(),
            tensor.spec.size()
        )));
    }
    bytes.par_chunks(CHUNK).enumerate().try_for_each(|(c, chunk)| {
        writer.write_at(index, (c * CHUNK) as u64, chunk)?;
        progress(chunk.len() as u64);
        Ok(())
    })
}

/// Converts one tensor in chunks of whole rows.
fn write_tensor(
    writer: &PositionedFile,
    index: usize,
    tensor: &OutTensor,
    source: &dyn RowSource,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let ty = tensor.spec.ty;
    match &tensor.source {
        Source::Values(values) => {
            let mut bytes = vec![0u8; tensor.spec.size() as usize];
            quant::quantize(ty, values, &mut bytes);
            writer.write_at(index, 0, &bytes)?;
            progress(bytes.len() as u64);
            Ok(())
        }
        Source::Hf { name, rows, cols, permute_heads } => {
            if let Some(bytes) = source.stored(name, ty) {
                return write_stored(writer, index, tensor, name, &bytes, progress);
            }
            let row_bytes = tensor.spec.size() as usize / rows.max(&1);
            let per_chunk = (CHUNK / cols.max(&1)).max(1);
            (0..rows.div_ceil(per_chunk)).into_par_iter().try_for_each(|c| {
                let first = c * per_chunk;
                let n = per_chunk.min(rows - first);
                let mut values = vec![0f32; n * cols];
                read_output_rows(source, name, first, *rows, *cols, *permute_heads, &mut values)?;
                let mut bytes = vec![0u8; n * row_bytes];
                quant::quantize(ty, &values, &mut bytes);
                writer.write_at(index, (first * row_bytes) as u64, &bytes)?;
                progress(bytes.len() as u64);
                Ok(())
            })
        }
    }
}

/// Output rows `first..` of a tensor: the same HF rows, or for Q/K the permuted ones.
fn read_output_rows(
    source: &dyn RowSource,
    name: &str,
    first: usize,
    rows: usize,
    cols: usize,
    heads: Option<usize>,
    out: &mut [f32],
) -> Result<()> {
    let Some(heads) = heads else { return source.read_rows(name, first, out) };
    for (k, row) in out.chunks_exact_mut(cols).enumerate() {
        source.read_rows(name, names::hf_row_of_gguf_row(first + k, rows, heads), row)?;
    }
    Ok(())
}

/// The parsed tokenizer files of a model folder, if it has `tokenizer.json`.
pub fn tokenizer_files(folder: &ModelFolder) -> Result<Option<TokenizerFiles>> {
    let json_path = folder.file("tokenizer.json");
    let sentencepiece = folder.file("tokenizer.model").and_then(|p| std::fs::read(p).ok());
    if json_path.is_none() && sentencepiece.is_none() {
        return Ok(None);
    }
    let read = |p: &Path| -> Result<Json> {
        let text = std::fs::read_to_string(p).map_err(|e| GgufError::io("read", p, e))?;
        serde_json::from_str(&text)
            .map_err(|e| GgufError::Convert(format!("{} is not valid JSON: {e}", p.display())))
    };
    let tokenizer = json_path.map(|p| read(&p)).transpose()?.unwrap_or(Json::Null);
    let config = folder.file("tokenizer_config.json").map(|p| read(&p)).transpose()?;
    let added_tokens = folder.file("added_tokens.json").map(|p| read(&p)).transpose()?;
    let chat_template_file =
        folder.file("chat_template.jinja").and_then(|p| std::fs::read_to_string(p).ok());
    Ok(Some(TokenizerFiles { tokenizer, sentencepiece, config, added_tokens, chat_template_file }))
}

/// Everything a conversion decided, for the caller to report.
pub struct Converted {
    pub tensors: Vec<OutTensor>,
    /// The pre-tokenizer written, and whether it was guessed from the regex.
    pub pre: Option<(String, bool)>,
    pub bytes: u64,
}

/// The complete metadata and tensor plan for converting `folder`. `pre` is the
/// pre-tokenizer found by the caller (by probe hash); without it, it is guessed.
pub fn prepare(
    folder: &ModelFolder,
    ftype: FileType,
    name: &str,
    pre: Option<&str>,
) -> Result<(Vec<(String, Value)>, Converted)> {
    let params = LlamaParams::from_config(folder.config())?;
    let hf: Vec<(String, Vec<usize>)> = folder
        .names()
        .into_iter()
        .filter_map(|n| {
            folder.tensor(n).ok().flatten().map(|t| (n.to_owned(), t.info.shape.clone()))
        })
        .collect();
    let tensors = plan(&hf, &params, ftype)?;
    let mut metadata = params.metadata(name, ftype);
    let mut chosen = None;
    if let Some(files) = tokenizer_files(folder)? {
        let (pre, guessed) = match pre {
            Some(p) => (p.to_owned(), false),
            None => (tokenizer::guess_pre(&files.tokenizer).unwrap_or("default").to_owned(), true),
        };
        // llama.cpp requires one token per embedding row.
        let vocab = hf
            .iter()
            .find(|(n, _)| n == "model.embed_tokens.weight")
            .map_or(params.vocab_size, |(_, s)| s[0]);
        metadata.extend(tokenizer::metadata(&files, folder.config(), vocab, &pre)?);
        chosen = Some((pre, guessed));
    }
    let bytes = tensors.iter().map(|t| t.spec.size()).sum();
    Ok((metadata, Converted { tensors, pre: chosen, bytes }))
}
