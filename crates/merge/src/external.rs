//! Merges written by a writer the caller brings (the CLI's MLX folders): the merged
//! tensors computed on demand, the output `config.json`, and the files a folder merge puts
//! beside its weights, handed over in one view.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use amalgam_tensors::DType;
use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::card::Library;
use crate::error::{MergeError, Result};
use crate::execute::{self, Bound};
use crate::report::Reporter;

/// Elements merged per parallel work item.
const CHUNK: usize = 1 << 18;

/// One file an external writer wrote (or, in a dry run, would write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    pub name: String,
    pub bytes: u64,
    pub tensors: usize,
}

/// The caller's writer: gets the merge, writes its output, returns the weight files.
pub type WriteFn = dyn Fn(&Merged) -> std::result::Result<Vec<WrittenFile>, String> + Send + Sync;

/// An output format the merge crate does not write itself (`MergeOptions::writer`).
#[derive(Clone)]
pub struct Writer(pub Arc<WriteFn>);

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Writer")
    }
}

/// Writes the files a folder merge puts beside its weights (tokenizer, chat template,
/// card) into a folder, the card made for a library.
pub(crate) type FilesFn<'a> = dyn Fn(&Path, Library) -> Result<()> + Sync + 'a;

/// A bound merge, for an external writer.
pub struct Merged<'a> {
    tensors: HashMap<&'a str, &'a Bound<'a>>,
    /// The output `config.json`.
    pub config: &'a Map<String, Value>,
    /// The output path the caller asked for.
    pub out: &'a Path,
    /// Plan only: write nothing, report the files that would be written.
    pub dry_run: bool,
    /// Replace an output that is there (`--force`).
    pub force: bool,
    pub reporter: &'a dyn Reporter,
    files: &'a FilesFn<'a>,
}

impl<'a> Merged<'a> {
    pub(crate) fn new(
        bound: &'a [Bound<'a>],
        config: &'a Map<String, Value>,
        out: &'a Path,
        (dry_run, force): (bool, bool),
        reporter: &'a dyn Reporter,
        files: &'a FilesFn<'a>,
    ) -> Merged<'a> {
        let tensors = bound.iter().map(|b| (b.spec.name.as_str(), b)).collect();
        Merged { tensors, config, out, dry_run, force, reporter, files }
    }

    /// The merged tensors' names.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().map(|n| (*n).to_owned()).collect();
        names.sort_unstable();
        names
    }

    /// A merged tensor's output dtype and shape.
    pub fn info(&self, name: &str) -> Option<(DType, &[usize])> {
        self.tensors.get(name).map(|b| (b.spec.dtype, b.spec.shape.as_slice()))
    }

    /// Fills `out` with the merged tensor `name`, whole, each value as a folder merge
    /// writes it (rounded to the output dtype).
    pub fn read(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let bound = self
            .tensors
            .get(name)
            .ok_or_else(|| MergeError::Tensor(format!("the merge has no tensor {name}")))?;
        let numel: usize = bound.spec.shape.iter().product();
        if numel != out.len() {
            return Err(MergeError::Tensor(format!(
                "{name} has {numel} values, not the {} asked for",
                out.len()
            )));
        }
        let stats = execute::stats(bound)?;
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .try_for_each(|(c, chunk)| execute::merged_values(bound, &stats, c * CHUNK, chunk))
    }

    /// Writes into `dir` what a folder merge writes beside its weights: the tokenizer
    /// files (with `generation_config.json` when the donor's are copied), the chat template, and unless turned off the
    /// model card (made for `library`) with `mergekit_config.yml`.
    pub fn write_files(&self, dir: &Path, library: Library) -> Result<()> {
        (self.files)(dir, library)
    }
}
