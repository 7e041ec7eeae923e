//! The mergekit YAML schema with mergekit's meaning, parsed by hand from a YAML tree so
//! that every error names its key path and every unknown key or parameter is reported
//! with the nearest valid name (mergekit ignores them silently, which hides typos).

use yaml_serde::{Mapping, Value as Yaml};

use crate::error::{MergeError, Result};
use crate::methods::{self, MERGEKIT_METHODS, MERGEKIT_PARAMETERS, MethodSpec};
use crate::model_ref::ModelRef;
use crate::params::{Conditional, Scalar, Setting};
use amalgam_tensors::DType;

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

fn mapping<'a>(value: &'a Yaml, location: &str) -> Result<&'a Mapping> {
    value.as_mapping().ok_or_else(|| {
        MergeError::config(location, format!("expected a mapping, found {}", kind(value)))
    })
}

fn sequence<'a>(value: &'a Yaml, location: &str) -> Result<&'a Vec<Yaml>> {
    value.as_sequence().ok_or_else(|| {
        MergeError::config(location, format!("expected a list, found {}", kind(value)))
    })
}

fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// Reports keys of `map` not in `known`, with the nearest known name.
fn check_keys(map: &Mapping, known: &[&str], location: &str, d: &mut Diagnostics) -> Result<()> {
    for key in map.keys() {
        let Some(key) = key.as_str() else {
            return Err(MergeError::config(location, format!("key {key:?} is not a string")));
        };
        if !known.contains(&key) {
            let hint =
                nearest(key, known).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
            d.warn(location, format!("unknown key `{key}` is ignored{hint}"))?;
        }
    }
    Ok(())
}

fn required_str<'a>(map: &'a Mapping, key: &str, location: &str) -> Result<&'a str> {
    match map.get(key) {
        Some(Yaml::String(s)) => Ok(s),
        Some(other) => {
            Err(MergeError::config(location, format!("expected a string, found {}", kind(other))))
        }
        None => Err(MergeError::config(location, format!("`{key}` is required"))),
    }
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

/// `tokenizer_source`, `tokenizer` and `chat_template`: parsed and checked here, applied
/// by the merge run.
fn tokenizer_fields(
    map: &Mapping,
    cx: &mut Context,
) -> Result<(Option<TokenizerConfig>, Option<String>)> {
    let legacy = map.get("tokenizer_source").filter(|v| !v.is_null());
    let section = map.get("tokenizer").filter(|v| !v.is_null());
    if legacy.is_some() && section.is_some() {
        return Err(MergeError::config(
            "tokenizer",
            "Cannot specify both tokenizer_source and tokenizer",
        ));
    }
    let tokenizer = match (legacy, section) {
        (Some(v), _) => Some(TokenizerConfig {
            source: vocab_source(v, "tokenizer_source")?,
            tokens: Vec::new(),
            pad_to_multiple_of: None,
        }),
        (None, Some(v)) => Some(tokenizer_section(v, cx)?),
        (None, None) => None,
    };
    let chat_template = match map.get("chat_template") {
        None | Some(Yaml::Null) => None,
        Some(Yaml::String(s)) => {
            crate::chat_template::validate(s)
                .map_err(|e| MergeError::config("chat_template", e))?;
            Some(s.clone())
        }
        Some(other) => {
            return Err(MergeError::config(
                "chat_template",
                format!("expected a string, found {}", kind(other)),
            ));
        }
    };
    Ok((tokenizer, chat_template))
}

/// The `tokenizer:` section: `source` (default `union`), `tokens`, `pad_to_multiple_of`.
fn tokenizer_section(value: &Yaml, cx: &mut Context) -> Result<TokenizerConfig> {
    let m = mapping(value, "tokenizer")?;
    check_keys(m, &["source", "tokens", "pad_to_multiple_of"], "tokenizer", cx.diagnostics)?;
    let source = match m.get("source").filter(|v| !v.is_null()) {
        Some(s) => vocab_source(s, "tokenizer.source")?,
        None => VocabSource::Union,
    };
    let pad_to_multiple_of = match m.get("pad_to_multiple_of").filter(|v| !v.is_null()) {
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n as usize),
            _ => {
                return Err(MergeError::config(
                    "tokenizer.pad_to_multiple_of",
                    "expected a positive integer",
                ));
            }
        },
        None => None,
    };
    let mut tokens = Vec::new();
    if let Some(v) = m.get("tokens").filter(|v| !v.is_null()) {
        for (key, setting) in mapping(v, "tokenizer.tokens")? {
            let Some(token) = key.as_str() else {
                return Err(MergeError::config("tokenizer.tokens", "token keys must be strings"));
            };
            let location = format!("tokenizer.tokens[{token:?}]");
            tokens.push((token.to_owned(), token_setting(setting, &location, cx)?));
        }
    }
    Ok(TokenizerConfig { source, tokens, pad_to_multiple_of })
}

fn token_setting(value: &Yaml, location: &str, cx: &mut Context) -> Result<TokenSetting> {
    let m = mapping(value, location)?;
    check_keys(m, &["source", "force"], location, cx.diagnostics)?;
    let force = match m.get("force") {
        None | Some(Yaml::Null) => false,
        Some(Yaml::Bool(b)) => *b,
        Some(other) => {
            return Err(MergeError::config(
                format!("{location}.force"),
                format!("expected true or false, found {}", kind(other)),
            ));
        }
    };
    let source = match m.get("source").filter(|v| !v.is_null()) {
        Some(s) => Some(row_source(s, &format!("{location}.source"), cx)?),
        None => None,
    };
    Ok(TokenSetting { source, force })
}

/// A token's row source: a model reference, `{kind: zero}`, or
/// `{kind: model_token, model, token | token_id}`.
fn row_source(value: &Yaml, location: &str, cx: &mut Context) -> Result<RowSource> {
    let Some(m) = value.as_mapping().filter(|m| m.get("kind").is_some()) else {
        return model_ref(value, location).map(RowSource::Model);
    };
    match m.get("kind").and_then(Yaml::as_str) {
        Some("zero") => {
            check_keys(m, &["kind"], location, cx.diagnostics)?;
            Ok(RowSource::Zero)
        }
        Some("model_token") => {
            check_keys(m, &["kind", "model", "token", "token_id"], location, cx.diagnostics)?;
            let model_value = m
                .get("model")
                .ok_or_else(|| MergeError::config(location, "`model` is required"))?;
            let model = model_ref(model_value, &format!("{location}.model"))?;
            let token = match (
                m.get("token").and_then(Yaml::as_str),
                m.get("token_id").and_then(Yaml::as_u64),
            ) {
                (Some(text), None) => TokenRef::Text(text.to_owned()),
                (None, Some(id)) => TokenRef::Id(id as usize),
                _ => {
                    return Err(MergeError::config(
                        location,
                        "give exactly one of `token` (text) or `token_id` (a number)",
                    ));
                }
            };
            Ok(RowSource::ModelToken { model, token })
        }
        other => Err(MergeError::config(
            format!("{location}.kind"),
            format!("unknown kind {other:?}; expected zero or model_token"),
        )),
    }
}

fn vocab_source(value: &Yaml, location: &str) -> Result<VocabSource> {
    match value.as_str() {
        Some("union") => Ok(VocabSource::Union),
        Some("base") => Ok(VocabSource::Base),
        _ => model_ref(value, location).map(VocabSource::Model),
    }
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, c)| *d <= c.len().max(name.len()).div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters, counting a swap of neighbours as one edit (optimal
/// string alignment), since swapped letters are the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Result<MergeConfig>, Vec<String>) {
        let mut d = Diagnostics::new(false);
        let r = MergeConfig::parse(text, &mut d);
        (r, d.warnings)
    }

    #[test]
    fn seed_config_parses() {
        let text = "slices:\n- sources:\n  - layer_range: [0, 20]\n    model: meta-llama/Meta-Llama-3-70B-Instruct\n\
                    - sources:\n  - layer_range: [10, 30]\n    model: meta-llama/Meta-Llama-3-70B-Instruct\n\
                    merge_method: passthrough\ndtype: float16\n";
        let (config, warnings) = parse(text);
        let config = config.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.slices.len(), 2);
        assert_eq!(config.slices[1].sources[0].layer_range, Some((10, 30)));
        assert_eq!(config.dtype, Some(DType::F16));
        assert_eq!(config.referenced_models().len(), 1);
    }

    #[test]
    fn typos_are_warned_with_the_nearest_name() {
        let text = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {wieght: 1.0}\ndtyp: float16\n";
        let (config, warnings) = parse(text);
        assert!(config.is_ok());
        assert!(
            warnings.iter().any(|w| w.contains("`dtyp`") && w.contains("`dtype`")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("models[0].parameters.wieght") && w.contains("`weight`")),
            "{warnings:?}"
        );
    }

    #[test]
    fn strict_turns_warnings_into_errors() {
        let mut d = Diagnostics::new(true);
        let err =
            MergeConfig::parse("merge_method: linear\nmodels: [{model: a}]\nnmae: x\n", &mut d)
                .unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
    }

    #[test]
    fn structural_errors_name_their_location() {
        let cases = [
            ("merge_method: linear\n", "Exactly one of"),
            (
                "merge_method: frobnicate\nmodels: [{model: a}]\n",
                "Unimplemented merge method frobnicate",
            ),
            (
                "merge_method: passthrough\nslices:\n- sources:\n  - {model: a, layer_range: [0, 2]}\n  - {model: b, layer_range: [0, 3]}\n",
                "slices[0]",
            ),
            (
                "merge_method: passthrough\nslices:\n- sources:\n  - {model: a, layer_range: [3, 2]}\n",
                "slices[0].sources[0].layer_range",
            ),
            (
                "merge_method: linear\nmodels: [{model: a}]\ndtype: float8\n",
                "Unimplemented dtype \"float8\"",
            ),
            ("merge_method: linear\nmodels: [{model: a@b@c}]\n", "models[0].model"),
            (
                "merge_method: linear\nmodules: {text_decoder: {models: [{model: a}]}}\n",
                "not supported yet",
            ),
            ("merge_method: dare_tie\nmodels: [{model: a}]\n", "did you mean `dare_ties`?"),
            (
                "merge_method: linear\nmodels: [{model: a}]\ntokenizer_source: base\ntokenizer: {source: base}\n",
                "Cannot specify both",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).0.unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn settings_of_every_shape() {
        let text = "merge_method: slerp\nbase_model: a\nslices:\n- sources:\n  - {model: a, layer_range: [0, 2]}\n  - {model: b, layer_range: [0, 2]}\n\
                    parameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5]\n    - value: 0.5\n";
        let config = parse(text).0.unwrap();
        let (name, setting) = &config.parameters[0];
        assert_eq!(name, "t");
        let Setting::Conditionals(c) = setting else { panic!("{setting:?}") };
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].filter.as_deref(), Some("self_attn"));
    }

    #[test]
    fn configs_of_other_mergekit_tools() {
        let cases = [
            (
                "base_model: a\nexperts:\n  - source_model: b\n",
                "mergekit-moe config (it has `experts:`)",
            ),
            (
                "genome:\n  models: [a, b]\ntasks: [{name: x}]\n",
                "mergekit-evolve config (it has `genome:`)",
            ),
            (
                "name: one\nmerge_method: linear\nmodels: [{model: a}]\n---\nname: two\nmerge_method: linear\nmodels: [{model: one}]\n",
                "mergekit-multi config (it has several YAML documents",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).0.unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        // A leading document marker is one document, not mergekit-multi.
        assert_eq!(documents("---\nmerge_method: linear # x\n...\n"), 1);
    }

    #[test]
    fn every_mergekit_method_is_implemented() {
        for name in MERGEKIT_METHODS {
            assert!(lookup_method(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn nearest_names() {
        assert_eq!(nearest("wieght", &["weight", "density"]), Some("weight"));
        assert_eq!(nearest("zzzzzz", &["weight", "density"]), None);
        assert_eq!(nearest("dtpye", &["dtype", "out_dtype"]), Some("dtype"));
        assert_eq!(edit_distance("ab", "ba"), 1);
    }
}
