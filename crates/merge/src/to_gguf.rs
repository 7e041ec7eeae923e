//! Merging straight into a (quantized) GGUF file in one streaming pass: the merged rows
//! of each tensor are computed on demand, Q/K rows permuted, quantized by llama.cpp's
//! mixture rules (or to each input's own type, copying unchanged GGUF tensors block for
//! block) and written at their offsets — the fp16 intermediate never exists.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use amalgam_gguf::convert::{self, RowSource};
use amalgam_gguf::llama::LlamaParams;
use amalgam_gguf::{FileType, GgmlType, GgufError, Value, blocks, tokenizer};
use amalgam_tensors::DType;
use serde_json::{Map, Value as Json};

use crate::error::{MergeError, Result};
use crate::execute::{self, Bound};
use crate::methods::{Kernel, Stats};
use crate::report::Reporter;
use crate::source::{Input, Model};

/// Whether an output path names a GGUF file.
pub fn is_gguf_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// How a merge into GGUF picks each tensor's block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufTypes {
    /// llama.cpp's mixture rules for this file type.
    Mixture(FileType),
    /// Each tensor keeps its first input's stored type: a GGUF tensor passed through
    /// unchanged is copied block for block, a scaled one keeps its quants with its block
    /// scales multiplied, a combined one is quantized again to that type.
    Source,
}

/// The mixture of a GGUF output: as asked, else the merge's dtype unquantized.
pub fn file_type(quant: Option<FileType>, dtype: Option<DType>) -> FileType {
    quant.unwrap_or(match dtype {
        Some(DType::F16) => FileType::F16,
        Some(DType::BF16) => FileType::BF16,
        _ => FileType::F32,
    })
}

/// How `--quant source` wrote the tensors a merge changes (the rest are copied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Scaled passthrough tensors whose block scales were multiplied, quants kept.
    pub rescaled: usize,
    /// Tensors computed (combined, or scaled in a type with no block scales) and
    /// quantized again to their input's type.
    pub requantized: usize,
}

/// Gives each tensor its first input's stored type (`--quant source`); counts those the
/// merge changes.
pub fn use_source_types(tensors: &mut [convert::OutTensor], bound: &[Bound]) -> Result<Changed> {
    let by_name: HashMap<&str, &Bound> = bound.iter().map(|b| (b.spec.name.as_str(), b)).collect();
    let mut changed = Changed::default();
    for t in tensors {
        let convert::Source::Hf { name, .. } = &t.source else { continue };
        let Some(b) = by_name.get(name.as_str()) else { continue };
        let Some(input) = b.inputs.first() else { continue };
        let ty = stored_type(input);
        match passed_through(b, ty) {
            Some(1.0) => {}
            Some(_) if has_block_scales(ty) => changed.rescaled += 1,
            _ if matches!(ty, GgmlType::Q8_1 | GgmlType::Q8K) => {
                return Err(MergeError::Output(format!(
                    "{name} is stored as {ty}, an activation type no GGUF weight is written \
                     in, and the merge changes it; pass --quant with a llama.cpp mixture"
                )));
            }
            _ => changed.requantized += 1,
        }
        t.spec.ty = ty;
    }
    Ok(changed)
}

/// Whether [`blocks::rescale`] scales blocks of `ty`.
fn has_block_scales(ty: GgmlType) -> bool {
    blocks::rescale(ty, &mut [], 1.0)
}

/// The GGUF type an input is stored as (a safetensors dtype's float type).
fn stored_type(input: &Input) -> GgmlType {
    match input {
        Input::Gguf { ty, .. } => *ty,
        Input::Adapted { base, .. } => stored_type(base),
        other => match other.dtype() {
            DType::F16 => GgmlType::F16,
            DType::BF16 => GgmlType::BF16,
            DType::F32 | DType::F64 => GgmlType::F32,
        },
    }
}

/// The scale of a tensor that is one GGUF input of type `ty` passed through (1 when
/// unscaled), or `None` when the merge computes it.
fn passed_through(b: &Bound, ty: GgmlType) -> Option<f32> {
    let [Input::Gguf { ty: stored, .. }] = b.inputs.as_slice() else { return None };
    match b.kernel {
        Kernel::Passthrough { scale } if *stored == ty => Some(scale.unwrap_or(1.0)),
        _ => None,
    }
}

/// What a lossless passthrough writes for a tensor passed through from a GGUF input of
/// type `ty`: its stored bytes when unscaled (or scaled by 1), a copy with each block's
/// scales multiplied when scaled.
fn verbatim<'a>(b: &Bound<'a>, ty: GgmlType) -> Option<Cow<'a, [u8]>> {
    let scale = passed_through(b, ty)?;
    let [Input::Gguf { model, name, .. }] = b.inputs.as_slice() else { return None };
    let (_, data) = model.raw(name)?;
    if scale == 1.0 {
        return Some(Cow::Borrowed(data));
    }
    let mut bytes = data.to_vec();
    blocks::rescale(ty, &mut bytes, scale).then_some(Cow::Owned(bytes))
}

/// GGUF metadata entries.
pub type Metadata = Vec<(String, Value)>;

/// What the writer needs besides the bound tensors.
pub struct GgufOutput<'a> {
    pub path: &'a Path,
    pub ftype: FileType,
    /// The merged model's `config.json`.
    pub config: &'a Map<String, Json>,
    /// The model whose tokenizer the output carries.
    pub donor: &'a Model,
    pub tokenizer_pre: Option<&'a str>,
    pub license: Option<String>,
    pub force: bool,
    /// Split into parts of at most this many bytes.
    pub split_max: Option<u64>,
    /// Finds the pre-tokenizer of a model folder by its probe encoding.
    pub detect_pre: Option<fn(&Path) -> Option<String>>,
    /// A merged tokenizer (a config's tokenizer section), replacing the donor's.
    pub merged_tokenizer: Option<tokenizer::TokenizerFiles>,
}

/// The GGUF tensors and metadata of a merge, without writing anything.
pub fn prepare(
    out: &GgufOutput,
    bound: &[Bound],
    reporter: &dyn Reporter,
) -> Result<(Metadata, Vec<convert::OutTensor>)> {
    let params = LlamaParams::from_config(out.config)?;
    let hf: Vec<(String, Vec<usize>)> =
        bound.iter().map(|b| (b.spec.name.clone(), b.spec.shape.clone())).collect();
    let tensors = convert::plan(&hf, &params, out.ftype)?;
    let name = out.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut metadata = params.metadata(&name, out.ftype);
    if let Some(license) = &out.license {
        metadata.push(("general.license".into(), Value::String(license.clone())));
    }
    let vocab = hf
        .iter()
        .find(|(n, _)| n == "model.embed_tokens.weight")
        .map_or(params.vocab_size, |(_, s)| s[0]);
    metadata.extend(tokenizer_metadata(out, vocab, reporter)?);
    Ok((metadata, tensors))
}

/// The donor's tokenizer as GGUF metadata: rebuilt from a folder's `tokenizer.json`, or
/// copied from a GGUF donor.
fn tokenizer_metadata(
    out: &GgufOutput,
    vocab: usize,
    reporter: &dyn Reporter,
) -> Result<Vec<(String, Value)>> {
    donor_tokenizer(out.donor, out, vocab, reporter)
}

/// [`tokenizer_metadata`] of `donor` (an adapted model's tokenizer is its base's).
fn donor_tokenizer(
    donor: &Model,
    out: &GgufOutput,
    vocab: usize,
    reporter: &dyn Reporter,
) -> Result<Vec<(String, Value)>> {
    if let Some(files) = &out.merged_tokenizer {
        // Adding tokens leaves the pre-tokenizer as it is: detect it on the donor's files.
        let root = match donor.unadapted() {
            Model::Folder(f) => Some(f.root()),
            _ => None,
        };
        return folder_metadata(files, root, out, vocab, reporter);
    }
    match donor {
        Model::Adapted(base, _) => donor_tokenizer(base, out, vocab, reporter),
        Model::Gguf(g) => Ok(g
            .file()
            .header
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .cloned()
            .collect()),
        Model::Folder(f) => {
            let Some(files) = convert::tokenizer_files(f)? else {
                reporter.warn("the base model has no tokenizer.json; the GGUF has no tokenizer and llama.cpp will not load it");
                return Ok(Vec::new());
            };
            folder_metadata(&files, Some(f.root()), out, vocab, reporter)
        }
    }
}

/// GGUF tokenizer metadata from Hugging Face tokenizer files, with `tokenizer.ggml.pre`
/// from `--tokenizer-pre`, else detected on the folder `root`, else guessed.
fn folder_metadata(
    files: &tokenizer::TokenizerFiles,
    root: Option<&Path>,
    out: &GgufOutput,
    vocab: usize,
    reporter: &dyn Reporter,
) -> Result<Vec<(String, Value)>> {
    let detected = out.detect_pre.zip(root).and_then(|(detect, root)| detect(root));
    let pre = match out.tokenizer_pre.map(str::to_owned).or(detected) {
        Some(p) => p,
        None => {
            let guess = tokenizer::guess_pre(&files.tokenizer).unwrap_or("default");
            reporter.warn(&format!(
                "tokenizer.ggml.pre = {guess:?} was guessed from the pre-tokenizer definition; \
                 pass --tokenizer-pre to set it"
            ));
            guess.to_owned()
        }
    };
    Ok(tokenizer::metadata(files, out.config, vocab, &pre)?)
}

/// Merged rows, computed on demand for the GGUF writer. A tensor's statistics (for
/// whole-tensor methods, the merged tensor itself) are computed when its first rows are
/// asked for and dropped once all its rows have been served, so only the tensors being
/// written are in memory.
struct MergedRows<'a> {
    tensors: HashMap<&'a str, Lazy<'a>>,
}

struct Lazy<'a> {
    bound: &'a Bound<'a>,
    stats: Mutex<Option<Arc<Stats>>>,
    rows_left: AtomicUsize,
}

impl Lazy<'_> {
    fn stats(&self) -> Result<Arc<Stats>> {
        let mut slot = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = slot.as_ref() {
            return Ok(Arc::clone(stats));
        }
        let stats = Arc::new(execute::stats(self.bound)?);
        *slot = Some(Arc::clone(&stats));
        Ok(stats)
    }

    /// Counts `rows` as served; the last ones free the statistics.
    fn served(&self, rows: usize) {
        if self.rows_left.fetch_sub(rows, Ordering::AcqRel) == rows {
            *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl RowSource for MergedRows<'_> {
    fn read_rows(&self, name: &str, first: usize, out: &mut [f32]) -> amalgam_gguf::Result<()> {
        let lazy = self
            .tensors
            .get(name)
            .ok_or_else(|| GgufError::Convert(format!("no merged tensor {name}")))?;
        let failed = |e: MergeError| GgufError::Convert(e.to_string());
        let stats = lazy.stats().map_err(failed)?;
        let cols = lazy.bound.spec.shape.last().copied().unwrap_or(1).max(1);
        execute::merged_values(lazy.bound, &stats, first * cols, out).map_err(failed)?;
        lazy.served(out.len() / cols);
        Ok(())
    }

    fn stored(&self, name: &str, ty: GgmlType) -> Option<Cow<'_, [u8]>> {
        verbatim(self.tensors.get(name)?.bound, ty)
    }
}

/// Refuses output files that exist, unless `force`.
pub fn refuse_taken(paths: &[&Path], force: bool) -> Result<()> {
    match paths.iter().find(|p| p.exists()).filter(|_| !force) {
        Some(taken) => Err(MergeError::Output(format!(
            "{} exists; pass --force to replace it",
            taken.display()
        ))),
        None => Ok(()),
    }
}

/// Writes the merge into `out.path` through a hidden sibling renamed at the end, or, when
/// `staged` (a resumable merge's staging folder and its record), into that folder, going
/// on from what the record says was written, for the caller to move into place. Returns
/// the final paths.
pub fn write(
    out: &GgufOutput,
    bound: &[Bound],
    metadata: &[(String, Value)],
    tensors: &[convert::OutTensor],
    reporter: &dyn Reporter,
    staged: Option<(&Path, &dyn convert::Record)>,
) -> Result<Vec<std::path::PathBuf>> {
    refuse_taken(&[out.path], out.force)?;
    let mut source = MergedRows { tensors: HashMap::with_capacity(bound.len()) };
    for b in bound {
        let numel: usize = b.spec.shape.iter().product();
        let rows = numel / b.spec.shape.last().copied().unwrap_or(1).max(1);
        let lazy = Lazy { bound: b, stats: Mutex::new(None), rows_left: AtomicUsize::new(rows) };
        source.tensors.insert(b.spec.name.as_str(), lazy);
    }
    if let Some(parent) = out.path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| MergeError::io("create", parent, e))?;
    }
    let progress = convert::Progress {
        bytes: &|n| reporter.advance(n),
        tensor_done: &|| reporter.tensor_done(),
    };
    let split = out.split_max;
    Ok(match staged {
        Some((dir, record)) => convert::write_staged(
            dir, out.path, metadata, tensors, &source, &progress, split, record,
        )?,
        None => convert::write(out.path, metadata, tensors, &source, &progress, split)?,
    })
}
