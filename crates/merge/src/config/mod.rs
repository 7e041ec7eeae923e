//! The mergekit YAML schema with mergekit's meaning, parsed by hand from a YAML tree so
//! that every error names its key path and every unknown key or parameter is reported
//! with the nearest valid name (mergekit ignores them silently, which hides typos).

use yaml_serde::{Mapping, Value as Yaml};

use crate::error::{MergeError, Result};
use crate::methods::{self, MERGEKIT_METHODS, MERGEKIT_PARAMETERS, MethodSpec};
use crate::model_ref::ModelRef;
use crate::params::{Conditional, Scalar, Setting};
use amalgam_tensors::DType;

pub mod chat_template;
mod tokenizer;
mod yaml;

pub use crate::suggest::nearest;
use yaml::{check_keys, kind, mapping, required_str, sequence};

use tokenizer::tokenizer_fields;

/// Named parameter settings, in the order written.
pub type Params = Vec<(String, Setting)>;

/// A parsed merge configuration.
#[derive(Clone, Debug)]
pub struct MergeConfig {
    pub merge_method: &'static MethodSpec,
    pub slices: Vec<OutputSlice>,
    /// Whether the config used `models:` (one slice over all layers) rather than `slices:`.
    pub from_models: bool,
    pub base_model: Option<ModelRef>,
    pub parameters: Params,
    pub dtype: Option<DType>,
    pub out_dtype: Option<DType>,
    /// `tokenizer_source`, or the `tokenizer:` section.
    pub tokenizer: Option<TokenizerConfig>,
    pub chat_template: Option<String>,
}

/// How the output vocabulary is built and the embeddings aligned to it.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerConfig {
    pub source: VocabSource,
    /// Per-token settings, in config order.
    pub tokens: Vec<(String, TokenSetting)>,
    pub pad_to_multiple_of: Option<usize>,
}

/// Where the output vocabulary comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum VocabSource {
    /// The base model's tokenizer plus every other model's tokens.
    Union,
    /// The base model's tokenizer.
    Base,
    /// This model's tokenizer.
    Model(ModelRef),
}

/// A `tokens:` entry: where the token's embedding row comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenSetting {
    pub source: Option<RowSource>,
    /// Use `source` even for models that have the token.
    pub force: bool,
}

/// An embedding row chosen in the config.
#[derive(Clone, Debug, PartialEq)]
pub enum RowSource {
    /// This model's row for the same token.
    Model(ModelRef),
    /// This model's row for another token, by text or id.
    ModelToken { model: ModelRef, token: TokenRef },
    /// A row of zeros.
    Zero,
}

/// A token named by its text or its id in a model's vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenRef {
    Text(String),
    Id(usize),
}

/// One output slice: layers taken in step from each source.
#[derive(Clone, Debug)]
pub struct OutputSlice {
    pub sources: Vec<InputSlice>,
    pub base_model: Option<ModelRef>,
    pub parameters: Params,
}

/// One source of a slice.
#[derive(Clone, Debug)]
pub struct InputSlice {
    pub model: ModelRef,
    /// Half-open `[start, end)`; `None` for `models:` entries (all layers of the model).
    pub layer_range: Option<(usize, usize)>,
    pub parameters: Params,
}

/// Warnings found while parsing; with `strict`, they are errors instead.
pub struct Diagnostics {
    pub strict: bool,
    pub warnings: Vec<String>,
}

const TOP_KEYS: &[&str] = &[
    "merge_method",
    "models",
    "slices",
    "modules",
    "base_model",
    "parameters",
    "dtype",
    "out_dtype",
    "tokenizer_source",
    "tokenizer",
    "chat_template",
];

impl MergeConfig {
    /// Parses config text. Warnings (unknown keys and parameters) go to `diagnostics`.
    pub fn parse(text: &str, diagnostics: &mut Diagnostics) -> Result<MergeConfig> {
        if documents(text) > 1 {
            return Err(other_tool(
                "mergekit-multi",
                "it has several YAML documents; `amalgam merge` runs one merge per config, \
                 so split the documents into files and merge them in order",
            ));
        }
        let root: Yaml = yaml_serde::from_str(text).map_err(|e| MergeError::Yaml(e.to_string()))?;
        let map = mapping(&root, "the top level")?;
        if map.get("merge_method").is_none() {
            if let Some(key) = ["experts", "gate_mode", "experts_per_token"]
                .into_iter()
                .find(|k| map.get(*k).is_some())
            {
                return Err(other_tool("mergekit-moe", &format!("it has `{key}:`")));
            }
            if let Some(key) = ["genome", "tasks"].into_iter().find(|k| map.get(*k).is_some()) {
                return Err(other_tool("mergekit-evolve", &format!("it has `{key}:`")));
            }
        }
        check_keys(map, TOP_KEYS, "the top level", diagnostics)?;
        let method_name = required_str(map, "merge_method", "merge_method")?;
        let merge_method = lookup_method(method_name)?;

        let given =
            ["models", "slices", "modules"].map(|k| map.get(k).is_some_and(|v| !v.is_null()));
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(MergeError::config(
                "the top level",
                "Exactly one of 'models', 'slices', or 'modules' must be present",
            ));
        }
        if given[2] {
            return Err(MergeError::Unsupported(
                "`modules:` (per-module merges of multi-module models such as vision-language \
                 models) is not supported yet; for a text-only model, write the same \
                 `slices:` or `models:` at the top level"
                    .into(),
            ));
        }
        let base_model = optional_model(map, "base_model", "base_model")?;
        let mut cx = Context { method: merge_method, diagnostics };
        let (slices, from_models) = if given[0] {
            (vec![models_slice(map, &mut cx)?], true)
        } else {
            (parse_slices(map, &mut cx)?, false)
        };
        let parameters = params(map.get("parameters"), "parameters", &mut cx)?;
        let (tokenizer, chat_template) = tokenizer_fields(map, &mut cx)?;
        Ok(MergeConfig {
            merge_method,
            slices,
            from_models,
            base_model,
            parameters,
            dtype: dtype(map, "dtype")?,
            out_dtype: dtype(map, "out_dtype")?,
            tokenizer,
            chat_template,
        })
    }

    /// Every distinct model the config names, in the order first written: the base
    /// model first, then slice sources in order. (mergekit uses a set here, which makes
    /// the config donor and card order vary between runs; config order is stable.)
    pub fn referenced_models(&self) -> Vec<ModelRef> {
        let mut out: Vec<ModelRef> = Vec::new();
        let all = self.base_model.iter().chain(
            self.slices
                .iter()
                .flat_map(|s| s.base_model.iter().chain(s.sources.iter().map(|src| &src.model))),
        );
        for model in all {
            if !out.contains(model) {
                out.push(model.clone());
            }
        }
        out
    }
}

/// State threaded through parsing.
struct Context<'a> {
    method: &'static MethodSpec,
    diagnostics: &'a mut Diagnostics,
}

impl Diagnostics {
    /// A diagnostics sink; `strict` turns warnings into errors.
    pub fn new(strict: bool) -> Diagnostics {
        Diagnostics { strict, warnings: Vec::new() }
    }

    fn warn(&mut self, location: &str, message: String) -> Result<()> {
        if self.strict {
            return Err(MergeError::config(location, format!("{message} (--strict)")));
        }
        self.warnings.push(format!("{location}: {message}"));
        Ok(())
    }
}

/// How many non-empty YAML documents `text` holds (split at `---` lines).
fn documents(text: &str) -> usize {
    let mut count = 0;
    let mut content = false;
    for line in text.lines() {
        let bare = line.split('#').next().unwrap_or("").trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            count += usize::from(content);
            content = false;
        } else if !bare.trim().is_empty() && bare != "..." {
            content = true;
        }
    }
    count + usize::from(content)
}

/// The error for a config written for another mergekit tool.
fn other_tool(tool: &str, why: &str) -> MergeError {
    MergeError::Unsupported(format!(
        "this looks like a {tool} config ({why}); amalgam merge takes mergekit-yaml configs, \
         and amalgam has no {tool} equivalent yet"
    ))
}

fn lookup_method(name: &str) -> Result<&'static MethodSpec> {
    if let Some(m) = methods::method(name) {
        return Ok(m);
    }
    let known = methods::method_names().join(", ");
    let hint = nearest(name, MERGEKIT_METHODS)
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    Err(MergeError::config(
        "merge_method",
        format!("Unimplemented merge method {name}{hint}; amalgam has: {known}"),
    ))
}

fn optional_model(map: &Mapping, key: &str, location: &str) -> Result<Option<ModelRef>> {
    match map.get(key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(value) => model_ref(value, location).map(Some),
    }
}

/// A model reference: a string, or mergekit's mapping form `{model: ..., lora: ...}`.
fn model_ref(value: &Yaml, location: &str) -> Result<ModelRef> {
    match value {
        Yaml::String(s) => ModelRef::parse(s).map_err(|m| MergeError::config(location, m)),
        Yaml::Mapping(map) => {
            let text = |v: &Yaml| -> Result<String> {
                match v {
                    Yaml::String(s) => Ok(s.clone()),
                    Yaml::Mapping(m) => {
                        let path = required_str(m, "path", location)?;
                        Ok(match m.get("revision").and_then(Yaml::as_str) {
                            Some(rev) => format!("{path}@{rev}"),
                            None => path.to_owned(),
                        })
                    }
                    other => Err(MergeError::config(
                        location,
                        format!("expected a model path, found {}", kind(other)),
                    )),
                }
            };
            if map.get("override_architecture").is_some() {
                return Err(MergeError::Unsupported(format!(
                    "{location}: `override_architecture` is not supported yet"
                )));
            }
            let model = text(
                map.get("model")
                    .ok_or_else(|| MergeError::config(location, "`model` is required"))?,
            )?;
            let full = match map.get("lora") {
                Some(l) if !l.is_null() => format!("{model}+{}", text(l)?),
                _ => model,
            };
            ModelRef::parse(&full).map_err(|m| MergeError::config(location, m))
        }
        other => Err(MergeError::config(
            location,
            format!("expected a model reference, found {}", kind(other)),
        )),
    }
}

fn dtype(map: &Mapping, key: &'static str) -> Result<Option<DType>> {
    match map.get(key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::String(name)) => match DType::from_torch_name(name) {
            Some(DType::F64) => Err(MergeError::Unsupported(format!(
                "{key}: float64 merges are not supported yet; use float32"
            ))),
            Some(d) => Ok(Some(d)),
            None if name.trim_start_matches("torch.") == "int64" => {
                Err(MergeError::Unsupported(format!(
                    "{key}: int64 is only meaningful for integer buffers; use float32, float16 or bfloat16"
                )))
            }
            None => Err(MergeError::config(
                key,
                format!("Unimplemented dtype \"{name}\"; use float32, float16 or bfloat16"),
            )),
        },
        Some(other) => {
            Err(MergeError::config(key, format!("expected a dtype name, found {}", kind(other))))
        }
    }
}

/// `models:` as one slice whose sources span every layer.
fn models_slice(map: &Mapping, cx: &mut Context) -> Result<OutputSlice> {
    let list = sequence(&map["models"], "models")?;
    let mut sources = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let location = format!("models[{i}]");
        let entry = mapping(item, &location)?;
        check_keys(entry, &["model", "parameters"], &location, cx.diagnostics)?;
        let model = model_ref(
            entry
                .get("model")
                .ok_or_else(|| MergeError::config(&location, "`model` is required"))?,
            &format!("{location}.model"),
        )?;
        let parameters = params(entry.get("parameters"), &format!("{location}.parameters"), cx)?;
        sources.push(InputSlice { model, layer_range: None, parameters });
    }
    if sources.is_empty() {
        return Err(MergeError::config("models", "the list of models is empty"));
    }
    Ok(OutputSlice { sources, base_model: None, parameters: Vec::new() })
}

fn parse_slices(map: &Mapping, cx: &mut Context) -> Result<Vec<OutputSlice>> {
    let list = sequence(&map["slices"], "slices")?;
    let mut slices = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let location = format!("slices[{i}]");
        let entry = mapping(item, &location)?;
        check_keys(
            entry,
            &["sources", "base_model", "parameters", "residual_weight"],
            &location,
            cx.diagnostics,
        )?;
        let sources_yaml = entry
            .get("sources")
            .ok_or_else(|| MergeError::config(&location, "`sources` is required"))?;
        let mut sources = Vec::new();
        for (j, src) in sequence(sources_yaml, &format!("{location}.sources"))?.iter().enumerate() {
            sources.push(input_slice(src, &format!("{location}.sources[{j}]"), cx)?);
        }
        if sources.is_empty() {
            return Err(MergeError::config(
                format!("{location}.sources"),
                "a slice needs at least one source",
            ));
        }
        let lengths: Vec<usize> =
            sources.iter().filter_map(|s| s.layer_range.map(|(a, b)| b - a)).collect();
        if lengths.iter().any(|l| *l != lengths[0]) {
            return Err(MergeError::config(
                &location,
                format!(
                    "All inputs to a slice must contain the same number of layers; the \
                     layer_ranges here span {lengths:?} layers. Make every source's range \
                     the same length"
                ),
            ));
        }
        slices.push(OutputSlice {
            sources,
            base_model: optional_model(entry, "base_model", &format!("{location}.base_model"))?,
            parameters: params(entry.get("parameters"), &format!("{location}.parameters"), cx)?,
        });
    }
    if slices.is_empty() {
        return Err(MergeError::config("slices", "the list of slices is empty"));
    }
    Ok(slices)
}

fn input_slice(value: &Yaml, location: &str, cx: &mut Context) -> Result<InputSlice> {
    let entry = mapping(value, location)?;
    check_keys(entry, &["model", "layer_range", "parameters"], location, cx.diagnostics)?;
    let model = model_ref(
        entry.get("model").ok_or_else(|| MergeError::config(location, "`model` is required"))?,
        &format!("{location}.model"),
    )?;
    let range_location = format!("{location}.layer_range");
    let range = entry
        .get("layer_range")
        .ok_or_else(|| MergeError::config(location, "`layer_range` is required"))?;
    let bounds = sequence(range, &range_location)?;
    let ints: Vec<Option<u64>> = bounds.iter().map(Yaml::as_u64).collect();
    let (start, end) = match ints.as_slice() {
        [Some(a), Some(b)] => (*a as usize, *b as usize),
        _ => {
            return Err(MergeError::config(
                range_location,
                "expected two non-negative integers [start, end] (half-open: end is not included)",
            ));
        }
    };
    if start > end {
        return Err(MergeError::config(
            range_location,
            format!("start {start} is after end {end}"),
        ));
    }
    let parameters = params(entry.get("parameters"), &format!("{location}.parameters"), cx)?;
    Ok(InputSlice { model, layer_range: Some((start, end)), parameters })
}

/// Parses a `parameters:` mapping, warning about names the method does not read.
fn params(value: Option<&Yaml>, location: &str, cx: &mut Context) -> Result<Params> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let map = mapping(value, location)?;
    let mut out = Vec::with_capacity(map.len());
    for (key, setting) in map {
        let Some(name) = key.as_str() else {
            return Err(MergeError::config(
                location,
                format!("parameter name {key:?} is not a string"),
            ));
        };
        let at = format!("{location}.{name}");
        if cx.method.param(name).is_none() {
            let message = if MERGEKIT_PARAMETERS.contains(&name) {
                format!("`{name}` is not a parameter of {}; it is ignored", cx.method.name)
            } else {
                let names: Vec<&str> = cx.method.params.iter().map(|p| p.name).collect();
                let hint = nearest(name, &names)
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                format!("unknown parameter `{name}` is ignored{hint}")
            };
            cx.diagnostics.warn(&at, message)?;
        }
        out.push((name.to_owned(), parse_setting(setting, &at)?));
    }
    Ok(out)
}

fn scalar(value: &Yaml, location: &str) -> Result<Scalar> {
    match value {
        Yaml::Bool(b) => Ok(Scalar::Bool(*b)),
        Yaml::Number(n) => Ok(match n.as_i64() {
            Some(i) => Scalar::Int(i),
            None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Yaml::String(s) => Ok(Scalar::Str(s.clone())),
        other => {
            Err(MergeError::config(location, format!("expected a scalar, found {}", kind(other))))
        }
    }
}

/// A setting: scalar, gradient list, `{value, filter}` or a list of those.
fn parse_setting(value: &Yaml, location: &str) -> Result<Setting> {
    match value {
        Yaml::Mapping(_) => Ok(Setting::Conditionals(vec![conditional(value, location)?])),
        Yaml::Sequence(items) if items.iter().any(Yaml::is_mapping) => {
            let mut conditions = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                conditions.push(conditional(item, &format!("{location}[{i}]"))?);
            }
            Ok(Setting::Conditionals(conditions))
        }
        Yaml::Sequence(items) => {
            let values = items
                .iter()
                .enumerate()
                .map(|(i, v)| scalar(v, &format!("{location}[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            Ok(Setting::Gradient(values))
        }
        other => Ok(Setting::Scalar(scalar(other, location)?)),
    }
}

fn conditional(value: &Yaml, location: &str) -> Result<Conditional> {
    let map = mapping(value, location)?;
    for key in map.keys() {
        if !matches!(key.as_str(), Some("value" | "filter")) {
            return Err(MergeError::config(
                location,
                format!("a conditional setting has only `value` and `filter`, not {key:?}"),
            ));
        }
    }
    let inner =
        map.get("value").ok_or_else(|| MergeError::config(location, "`value` is required"))?;
    let value = match parse_setting(inner, &format!("{location}.value"))? {
        Setting::Conditionals(_) => {
            return Err(MergeError::config(
                location,
                "a conditional's value must be a scalar or a list of scalars",
            ));
        }
        s => s,
    };
    let filter = match map.get("filter") {
        None | Some(Yaml::Null) => None,
        Some(Yaml::String(f)) => Some(f.clone()),
        Some(other) => {
            return Err(MergeError::config(
                location,
                format!("`filter` must be a string, found {}", kind(other)),
            ));
        }
    };
    Ok(Conditional { value, filter })
}

#[cfg(test)]
mod tests;
