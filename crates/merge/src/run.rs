//! One merge from config file to finished output (a folder, a GGUF file, or the caller's
//! format): parse, locate the models, plan, write everything into a staging folder (or
//! file) beside the output, and move it into place only when complete, so an interrupted
//! or failed merge never leaves an output that looks done.

use std::fs;
use std::path::{Path, PathBuf};

use amalgam_tensors::hub;
use serde_json::{Map, Value};

use crate::card::{self, CardInput, CardModel, Library};
use crate::checkpoint;
use crate::config::{Diagnostics, MergeConfig};
use crate::error::{MergeError, Result};
use crate::execute;
use crate::external::{Merged, Writer};
use crate::opened::Opened;
use crate::output;
use crate::plan::Plan;
use crate::quality::{Evaluator, Measure};
pub use crate::report::Reporter;
use crate::resolve::Resolver;
use crate::source::Model;
use crate::staging::Staging;
use crate::to_gguf::{self, GgufOutput, GgufTypes};
use crate::tokenizers::{merged_vocabulary, write_tokenizer_files};
use crate::vocab::{self, Vocabulary};

/// mergekit-yaml's options, where they mean something here.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// Bytes per output shard (0: one file).
    pub out_shard_size: u64,
    pub copy_tokenizer: bool,
    pub write_model_card: bool,
    pub allow_crimes: bool,
    /// Seeds the random methods (dare, della); recorded in the card.
    pub random_seed: u64,
    /// Unknown config keys and parameters are errors, not warnings.
    pub strict: bool,
    /// Replace a non-empty output folder.
    pub force: bool,
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// Whether a merge (into a folder or a `.gguf`) records its progress so an interrupted one can be finished
    /// (`--resume`), and whether this run finishes one.
    pub resume: Resume,
    /// Cut vocabulary-indexed weights of differing vocabularies to the smallest one
    /// (`--unsafe-truncate-embeddings`) instead of failing.
    pub truncate_vocab: bool,
    /// The hub cache to use instead of the environment's.
    pub cache_dir: Option<PathBuf>,
    /// For a `.gguf` output: the llama.cpp mixture, or each input's own types (default:
    /// the inputs' types when every input is a GGUF, else the merge dtype unquantized).
    pub quant: Option<to_gguf::GgufTypes>,
    /// For a `.gguf` output: `tokenizer.ggml.pre`, overriding detection.
    pub tokenizer_pre: Option<String>,
    /// For a `.gguf` output: split into parts of at most this many bytes.
    pub split_max_size: Option<u64>,
    /// For a `.gguf` output: finds `tokenizer.ggml.pre` for a model folder by encoding a
    /// probe text (the caller owns tokenization; this crate does not tokenize).
    pub detect_pre: Option<fn(&Path) -> Option<String>>,
    /// For a folder output with a card: measures the staged merge for the card's "Merge
    /// quality" section before it is renamed into place.
    pub evaluate: Option<Evaluator>,
    /// Writes the merge in a format this crate does not know (an MLX folder) instead of
    /// a safetensors folder.
    pub writer: Option<Writer>,
}

/// Whether an interrupted merge (into a folder or a `.gguf`) can be finished by a later run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// No: an interrupt removes the partial output.
    Never,
    /// The merge records its progress; an interrupt keeps the partial for `--resume`.
    Record,
    /// Finish the partial an interrupted run of the same config and inputs left beside
    /// the output folder, keeping the tensors it recorded as written.
    Continue,
}

/// What a merge did (or, with `dry_run`, would do).
#[derive(Debug)]
pub struct Summary {
    pub out_layers: Option<usize>,
    pub tensors: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// (file name, bytes, tensor count) per shard.
    pub shards: Vec<(String, u64, usize)>,
    /// Each input model and the folder it was read from.
    pub models: Vec<(String, PathBuf)>,
}

/// Runs the merge described by the config file at `config_path` into `out_dir`.
pub fn run(
    config_path: &Path,
    out_dir: &Path,
    options: &MergeOptions,
    reporter: &dyn Reporter,
) -> Result<Summary> {
    let text =
        fs::read_to_string(config_path).map_err(|e| MergeError::io("read", config_path, e))?;
    run_config(&text, &config_path.display().to_string(), out_dir, options, reporter)
}

/// Runs the merge described by config `text`; `label` names it in warnings. The
/// pipeline: parse → open and plan the inputs → merge the vocabularies → bind tensors to
/// input bytes → the output `config.json` → write (a GGUF file, the caller's format, or a
/// staged folder with its weights, config, tokenizer and card, renamed into place).
pub fn run_config(
    text: &str,
    label: &str,
    out_dir: &Path,
    options: &MergeOptions,
    reporter: &dyn Reporter,
) -> Result<Summary> {
    let merge = Prepared::open(text, label, out_dir, options, reporter)?;
    let bound = merge.bind()?;
    let vocab_size =
        merge.vocabulary.as_ref().map(|v| v.padded).or_else(|| truncated_vocab(&bound, reporter));
    let (out_config, notes) = output_config(&merge.config, &merge.opened, vocab_size, reporter);
    if let Some(writer) = &options.writer {
        let files = |dir: &Path, library: Library| {
            merge.tokenizer_files(dir)?;
            merge.card(dir, &notes, library, None)
        };
        let modes = (options.dry_run, options.force);
        let merged = Merged::new(&bound, &out_config, out_dir, modes, reporter, &files);
        let written = (writer.0)(&merged).map_err(MergeError::Output)?;
        return Ok(external_summary(&merge.opened, &bound, written));
    }
    if to_gguf::is_gguf_path(out_dir) {
        return merge_to_gguf(&merge, &bound, &out_config);
    }
    write_folder(&merge, &bound, out_config, &notes)
}

/// A merge opened and planned, before its tensors are bound: what every output needs.
struct Prepared<'a> {
    /// The config's text, quoted in the card and fingerprinted for `--resume`.
    text: &'a str,
    config: MergeConfig,
    opened: Opened,
    /// The merged vocabulary, when the config has a `tokenizer:` section.
    vocabulary: Option<Vocabulary>,
    out_dir: &'a Path,
    options: &'a MergeOptions,
    reporter: &'a dyn Reporter,
}

impl<'a> Prepared<'a> {
    /// Parses the config, checks a folder output, and opens, plans and (for a tokenizer
    /// section) merges the vocabularies of the inputs.
    fn open(
        text: &'a str,
        label: &str,
        out_dir: &'a Path,
        options: &'a MergeOptions,
        reporter: &'a dyn Reporter,
    ) -> Result<Prepared<'a>> {
        let config = parse(text, label, options.strict, reporter)?;
        if !options.dry_run && !to_gguf::is_gguf_path(out_dir) {
            check_output(out_dir, options.force)?;
        }
        let resolver = Resolver {
            cache: options.cache_dir.clone().unwrap_or_else(hub::cache_dir),
            offline: hub::offline(),
            progress: &|file, done, total| reporter.download(file, done, total),
        };
        let opened = Opened::open_with(&config, &resolver, options.allow_crimes, reporter)?;
        let vocabulary = match &config.tokenizer {
            Some(t) => {
                Some(merged_vocabulary(t, &opened.plan, &opened.models, &resolver, reporter)?)
            }
            None => None,
        };
        Ok(Prepared { text, config, opened, vocabulary, out_dir, options, reporter })
    }

    /// Every planned tensor bound to its inputs.
    fn bind(&self) -> Result<Vec<execute::Bound<'_>>> {
        let bind = execute::BindOptions {
            dtype: self.config.dtype,
            out_dtype: self.config.out_dtype,
            seed: self.options.random_seed,
            truncate_vocab: self.options.truncate_vocab,
            vocab: self.vocabulary.as_ref(),
        };
        execute::bind(&self.opened.plan, &self.opened.models, bind)
    }

    /// The tokenizer files and chat template, into `dir`.
    fn tokenizer_files(&self, dir: &Path) -> Result<()> {
        let (config, opened, vocabulary) = (&self.config, &self.opened, self.vocabulary.as_ref());
        let copy = self.options.copy_tokenizer;
        write_tokenizer_files(dir, config, opened, vocabulary, copy, self.reporter)
    }

    /// The model card and the config's copy into `dir`, unless turned off.
    fn card(
        &self,
        dir: &Path,
        config_notes: &[String],
        library: Library,
        quality: Option<&str>,
    ) -> Result<()> {
        if !self.options.write_model_card {
            return Ok(());
        }
        let card = CardContext {
            config: &self.config,
            text: self.text,
            plan: &self.opened.plan,
            config_notes,
            quality,
            library,
        };
        let opened = &self.opened;
        write_card(dir, self.out_dir, &card, &opened.models, &opened.located, self.options)
    }
}

/// The folder branch of [`run_config`]: shards, config, tokenizer and card written into a
/// staging folder (journaled for `--resume`), measured if asked, renamed into place.
fn write_folder(
    merge: &Prepared,
    bound: &[execute::Bound],
    out_config: Map<String, Value>,
    notes: &[String],
) -> Result<Summary> {
    let (options, reporter) = (merge.options, merge.reporter);
    let shards = execute::Shards::assign(bound, options.out_shard_size);
    let summary = summary(&merge.opened, bound, &shards);
    if options.dry_run {
        return Ok(summary);
    }
    let staging = staging(merge)?;
    reporter.begin(bound.len(), summary.bytes_written);
    let checkpoint = staging.checkpoint.as_ref();
    shards.write(&staging.path, bound, summary.bytes_written, reporter, checkpoint)?;
    output::write_json(&staging.path.join("config.json"), &Value::Object(out_config))?;
    merge.tokenizer_files(&staging.path)?;
    if options.write_model_card {
        let quality = measure(&staging.path, &merge.opened, options)?;
        merge.card(&staging.path, notes, Library::Transformers, quality.as_deref())?;
    }
    staging.commit(merge.out_dir, options.force)?;
    Ok(summary)
}

/// The config, its warnings reported under `label`.
fn parse(text: &str, label: &str, strict: bool, reporter: &dyn Reporter) -> Result<MergeConfig> {
    let mut diagnostics = Diagnostics::new(strict);
    let config = MergeConfig::parse(text, &mut diagnostics)?;
    for w in &diagnostics.warnings {
        reporter.warn(&format!("{label}: {w}"));
    }
    Ok(config)
}

/// The output `config.json` (the donor's, following the merged layers and vocabulary),
/// with a note for each setting changed, each also reported.
fn output_config(
    config: &MergeConfig,
    opened: &Opened,
    vocab_size: Option<usize>,
    reporter: &dyn Reporter,
) -> (Map<String, Value>, Vec<String>) {
    let plan = &opened.plan;
    let mut notes = Vec::new();
    let out = output::output_config(
        opened.donor().config(),
        plan.arch,
        plan.layer_origins.as_deref(),
        vocab_size,
        config.out_dtype.or(config.dtype),
        &mut notes,
    );
    for note in &notes {
        reporter.warn(&format!("config.json: {note}"));
    }
    (out, notes)
}

/// What the merge does, for `--dry-run` and the caller's report.
fn summary(opened: &Opened, bound: &[execute::Bound], shards: &execute::Shards) -> Summary {
    Summary {
        out_layers: opened.plan.out_layers,
        tensors: bound.len(),
        bytes_read: bytes_read(bound),
        bytes_written: shards.sizes.iter().sum(),
        shards: shards.listing(),
        models: models(opened),
    }
}

/// What a merge written by an external writer did: the files it reports.
fn external_summary(
    opened: &Opened,
    bound: &[execute::Bound],
    written: Vec<crate::external::WrittenFile>,
) -> Summary {
    Summary {
        out_layers: opened.plan.out_layers,
        tensors: written.iter().map(|f| f.tensors).sum(),
        bytes_read: bytes_read(bound),
        bytes_written: written.iter().map(|f| f.bytes).sum(),
        shards: written.into_iter().map(|f| (f.name, f.bytes, f.tensors)).collect(),
        models: models(opened),
    }
}

/// The bytes of input the bound tensors read.
fn bytes_read(bound: &[execute::Bound]) -> u64 {
    bound.iter().flat_map(|b| &b.inputs).map(|i| i.stored_bytes()).sum()
}

/// Each input model and the folder it was read from.
fn models(opened: &Opened) -> Vec<(String, PathBuf)> {
    opened
        .plan
        .models
        .iter()
        .zip(&opened.located)
        .map(|(m, l)| (m.to_string(), l.folder.clone()))
        .collect()
}

/// The caller's measurement of the staged merge (`--eval-file`), if it asked for one.
fn measure(staged: &Path, opened: &Opened, options: &MergeOptions) -> Result<Option<String>> {
    let Some(evaluate) = &options.evaluate else { return Ok(None) };
    let donor = opened.plan.donor;
    let measure = Measure {
        staged,
        base: &opened.located[donor].folder,
        base_name: &opened.plan.models[donor].to_string(),
    };
    (evaluate.0)(&measure).map(Some).map_err(MergeError::Evaluation)
}

/// The vocabulary size vocabulary-indexed weights were cut to by
/// `--unsafe-truncate-embeddings`, if any were; warns about each cut.
fn truncated_vocab(bound: &[execute::Bound], reporter: &dyn Reporter) -> Option<usize> {
    let mut vocab = None;
    for b in bound.iter().filter(|b| b.plan.vocab_axis == Some(0)) {
        let first = |shape: &[usize]| shape.first().copied().unwrap_or(0);
        let rows: Vec<usize> = b.inputs.iter().map(|i| first(i.shape())).collect();
        let kept = first(&b.spec.shape);
        if rows.iter().any(|r| *r != kept) {
            reporter.warn(&format!(
                "--unsafe-truncate-embeddings: {} cut to its first {kept} rows (the inputs have \
                 {rows:?})",
                b.spec.name
            ));
            vocab = Some(kept);
        }
    }
    vocab
}

/// The staging folder beside the output: new, recording its progress unless the merge
/// never resumes, or the one an interrupted run of the same merge left (`--resume`).
fn staging(merge: &Prepared) -> Result<Staging> {
    let (options, out) = (merge.options, merge.out_dir);
    let fingerprint = checkpoint::fingerprint(merge.text, options, &merge.opened);
    match options.resume {
        Resume::Never => Staging::create(out, None),
        Resume::Record => Staging::create(out, Some(&fingerprint)),
        Resume::Continue => Staging::resume(out, &fingerprint, merge.reporter),
    }
}

/// The GGUF branch of [`run_config`]: one `.gguf` file instead of a folder.
fn merge_to_gguf(
    merge: &Prepared,
    bound: &[execute::Bound],
    out_config: &Map<String, Value>,
) -> Result<Summary> {
    let (config, opened, vocabulary) = (&merge.config, &merge.opened, merge.vocabulary.as_ref());
    let (options, reporter, out_path) = (merge.options, merge.reporter, merge.out_dir);
    let plan = &opened.plan;
    let donor = opened.donor();
    let dtype = config.out_dtype.or(config.dtype);
    let all_gguf = opened.models.iter().all(|m| matches!(m, Model::Gguf(_)));
    let types = match options.quant {
        Some(types) => types,
        None if all_gguf => GgufTypes::Source,
        None => GgufTypes::Mixture(to_gguf::file_type(None, dtype)),
    };
    let out = GgufOutput {
        path: out_path,
        ftype: match types {
            GgufTypes::Mixture(ftype) => ftype,
            GgufTypes::Source => to_gguf::file_type(None, dtype),
        },
        config: out_config,
        donor,
        tokenizer_pre: options.tokenizer_pre.as_deref(),
        license: license(donor),
        force: options.force,
        split_max: options.split_max_size,
        detect_pre: options.detect_pre,
        merged_tokenizer: vocabulary.map(|v| amalgam_gguf::tokenizer::TokenizerFiles {
            tokenizer: v.tokenizer.clone(),
            sentencepiece: None,
            config: vocab::output_config(v),
            added_tokens: None,
            chat_template_file: None,
        }),
    };
    let (mut metadata, mut tensors) = to_gguf::prepare(&out, bound, reporter)?;
    if types == GgufTypes::Source {
        source_file_type(&mut metadata, donor);
        let changed = to_gguf::use_source_types(&mut tensors, bound)?;
        if changed.rescaled > 0 {
            reporter.warn(&format!(
                "{} scaled tensors keep their quants, with each block's scales multiplied \
                 (rounded once to f16; exact for a power of two)",
                changed.rescaled
            ));
        }
        if changed.requantized > 0 {
            reporter.warn(&format!(
                "{} tensors are changed by the merge (combined, or scaled in a type without \
                 block scales) and quantized again to their inputs' types; the others are \
                 copied block for block",
                changed.requantized
            ));
        }
    }
    if let Some(template) = opened.chat_template(config, reporter) {
        let key = "tokenizer.chat_template";
        metadata.retain(|(k, _)| k != key);
        metadata.push((key.to_owned(), amalgam_gguf::Value::String(template)));
    }
    let bytes: u64 = tensors.iter().map(|t| t.spec.size()).sum();
    let file = out_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let summary = Summary {
        out_layers: plan.out_layers,
        tensors: tensors.len(),
        bytes_read: bytes_read(bound),
        bytes_written: bytes,
        shards: vec![(file, bytes, tensors.len())],
        models: models(opened),
    };
    if options.dry_run {
        return Ok(summary);
    }
    reporter.begin(tensors.len(), bytes);
    if options.resume == Resume::Never {
        to_gguf::write(&out, bound, &metadata, &tensors, reporter, None)?;
        return Ok(summary);
    }
    // Checked before a partial is taken over, so refusing does not lose it.
    let finals = amalgam_gguf::convert::output_paths(out_path, &tensors, options.split_max_size);
    to_gguf::refuse_taken(&finals.iter().map(PathBuf::as_path).collect::<Vec<_>>(), options.force)?;
    let staging = staging(merge)?;
    let Some(checkpoint) = staging.checkpoint.as_ref() else {
        return Err(MergeError::Output("a resumable GGUF merge without its journal".into()));
    };
    let staged = Some((staging.path.as_path(), checkpoint as &dyn amalgam_gguf::convert::Record));
    let finals = to_gguf::write(&out, bound, &metadata, &tensors, reporter, staged)?;
    staging.commit_files(&finals, options.force)?;
    Ok(summary)
}

/// `general.file_type` of an output in its inputs' types: the donor GGUF's.
fn source_file_type(metadata: &mut [(String, amalgam_gguf::Value)], donor: &Model) {
    let Model::Gguf(g) = donor.unadapted() else { return };
    let Some(value) = g.file().header.get("general.file_type") else { return };
    for (key, v) in metadata.iter_mut() {
        if key == "general.file_type" {
            *v = value.clone();
        }
    }
}

/// Refuses an output path that is a file, or a non-empty folder without `--force`.
fn check_output(out_dir: &Path, force: bool) -> Result<()> {
    if out_dir.is_file() {
        return Err(MergeError::Output(format!(
            "{} is a file; the output must be a folder (it is created if missing)",
            out_dir.display()
        )));
    }
    let non_empty = fs::read_dir(out_dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !force {
        return Err(MergeError::Output(format!(
            "{} exists and is not empty; choose another output folder, or pass --force to \
             replace it (its contents are deleted once the new merge is complete)",
            out_dir.display()
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// What the card describes: the config (parsed and verbatim), the plan and the changes
/// made to `config.json`.
struct CardContext<'a> {
    config: &'a MergeConfig,
    text: &'a str,
    plan: &'a Plan,
    config_notes: &'a [String],
    quality: Option<&'a str>,
    library: Library<'a>,
}

fn write_card(
    dir: &Path,
    out_dir: &Path,
    card: &CardContext,
    folders: &[Model],
    located: &[crate::resolve::Located],
    options: &MergeOptions,
) -> Result<()> {
    let CardContext { config, text, plan, config_notes, quality, library } = *card;
    let models: Vec<CardModel> = plan
        .models
        .iter()
        .zip(folders)
        .zip(located)
        .map(|((model, folder), found)| CardModel {
            model: model.clone(),
            on_hub: found.from_hub,
            license: license(folder),
        })
        .collect();
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "merged".into());
    let card = card::render(&CardInput {
        name: &name,
        config,
        config_text: text,
        plan,
        models: &models,
        source_layers: plan.arch.num_layers(folders[plan.donor].config()),
        random_seed: options.random_seed,
        config_notes,
        quality,
        library,
    });
    let readme = dir.join("README.md");
    fs::write(&readme, card).map_err(|e| MergeError::io("write", &readme, e))?;
    let yml = dir.join("mergekit_config.yml");
    fs::write(&yml, text).map_err(|e| MergeError::io("write", &yml, e))
}

/// The license a model declares: its card's front matter, or GGUF `general.license`.
fn license(model: &Model) -> Option<String> {
    match model {
        Model::Folder(_) => model
            .file("README.md")
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|t| card::card_license(&t)),
        Model::Gguf(g) => {
            g.file().header.get("general.license").and_then(|v| v.as_str()).map(str::to_owned)
        }
        Model::Adapted(base, _) => license(base),
    }
}
