//! The merged model's tokenizer: a config's `tokenizer:` section built into one
//! vocabulary from the inputs' tokenizers, and the tokenizer files and chat template
//! written beside the weights.

use std::fs;
use std::path::Path;

use serde_json::{Map, Value};

use crate::chat_template;
use crate::config::{MergeConfig, TokenizerConfig, VocabSource};
use crate::error::{MergeError, Result};
use crate::opened::Opened;
use crate::output;
use crate::plan::Plan;
use crate::report::Reporter;
use crate::resolve::Resolver;
use crate::source::Model;
use crate::vocab::{self, ModelTokenizer, Vocabulary};

/// The tokenizer (merged, or the donor's copied) and the chat template, into `dir`.
pub(crate) fn write_tokenizer_files(
    dir: &Path,
    config: &MergeConfig,
    opened: &Opened,
    vocabulary: Option<&Vocabulary>,
    copy_tokenizer: bool,
    reporter: &dyn Reporter,
) -> Result<()> {
    let donor = opened.donor();
    let copied = match vocabulary {
        Some(v) => write_tokenizer(v, donor, dir)?,
        None if copy_tokenizer => output::copy_tokenizer(donor, dir)?,
        None => Vec::new(),
    };
    if copy_tokenizer && copied.is_empty() {
        reporter.warn(&format!(
            "{} has no tokenizer (tokenizer_config.json with tokenizer.json or tokenizer.model); \
             the output has none either: copy one in before using the model",
            opened.plan.models[opened.plan.donor]
        ));
    }
    if let Some(template) = opened.chat_template(config, reporter) {
        if copied.is_empty() {
            reporter.warn("chat_template: the output has no tokenizer, so the template is dropped");
        } else {
            chat_template::apply(dir, &template)?;
        }
    }
    Ok(())
}

/// Builds the merged vocabulary from the models' tokenizers (and a `source:` model's).
pub(crate) fn merged_vocabulary(
    tokenizer: &TokenizerConfig,
    plan: &Plan,
    models: &[Model],
    resolver: &Resolver,
    reporter: &dyn Reporter,
) -> Result<Vocabulary> {
    let tokenizers: Vec<Option<ModelTokenizer>> = models
        .iter()
        .zip(&plan.models)
        .map(|(m, r)| {
            model_tokenizer(|name| m.tokenizer_file(name), m.config())
                .map_err(|e| MergeError::Model { model: r.to_string(), message: e.to_string() })
        })
        .collect::<Result<_>>()?;
    for (model, t) in plan.models.iter().zip(&tokenizers) {
        if t.is_none() {
            reporter.warn(&format!(
                "{model} has no tokenizer.json; its vocabulary is taken to be the base model's"
            ));
        }
    }
    let source = match &tokenizer.source {
        VocabSource::Model(model) => {
            let folder = resolver.locate(model)?.folder;
            let read = |name: &str| fs::read(folder.join(name)).ok();
            let config = fs::read(folder.join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
                .unwrap_or_default();
            Some(model_tokenizer(read, &config)?.ok_or_else(|| MergeError::Model {
                model: model.to_string(),
                message: "has no tokenizer.json to take the vocabulary from".into(),
            })?)
        }
        _ => None,
    };
    let vocab = vocab::build(tokenizer, &plan.models, &tokenizers, plan.donor, source.as_ref())?;
    if !vocab.missing.is_empty() {
        reporter.warn(&format!(
            "no input model has {} of the merged vocabulary's tokens (e.g. {:?}); their \
             embedding rows are zero",
            vocab.missing.len(),
            vocab.missing[0]
        ));
    }
    Ok(vocab)
}

/// A model's tokenizer from its files (`read` returns a file's bytes) and config.
fn model_tokenizer(
    read: impl Fn(&str) -> Option<Vec<u8>>,
    config: &Map<String, Value>,
) -> Result<Option<ModelTokenizer>> {
    let Some(bytes) = read("tokenizer.json") else { return Ok(None) };
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| MergeError::Output(format!("tokenizer.json does not parse as JSON: {e}")))?;
    let tokenizer_config =
        read("tokenizer_config.json").and_then(|b| serde_json::from_slice(&b).ok());
    let size = crate::arch::lookup(config, "vocab_size")
        .or_else(|| crate::arch::lookup(config, "text_config.vocab_size"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let vocab_size = match size {
        Some(n) => n,
        None => vocab::full_vocab(&json).map(|v| v.len()).unwrap_or(0),
    };
    Ok(Some(ModelTokenizer { json, config: tokenizer_config, vocab_size }))
}

/// Writes the merged tokenizer (`tokenizer.json`, `tokenizer_config.json`, and the
/// donor's `special_tokens_map.json`); returns the files written.
fn write_tokenizer(vocab: &Vocabulary, donor: &Model, dir: &Path) -> Result<Vec<&'static str>> {
    let mut written = vec!["tokenizer.json"];
    output::write_json(&dir.join("tokenizer.json"), &vocab.tokenizer)?;
    if let Some(config) = vocab::output_config(vocab) {
        output::write_json(&dir.join("tokenizer_config.json"), &config)?;
        written.push("tokenizer_config.json");
    }
    if let Some(bytes) = donor.tokenizer_file("special_tokens_map.json") {
        let path = dir.join("special_tokens_map.json");
        fs::write(&path, bytes).map_err(|e| MergeError::io("write", &path, e))?;
        written.push("special_tokens_map.json");
    }
    Ok(written)
}
