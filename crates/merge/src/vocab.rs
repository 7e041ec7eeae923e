//! Tokenizer merging: the output vocabulary (the base's, a model's, or the union of all),
//! its `tokenizer.json`, and for every input model where each output embedding row
//! comes from — mergekit's rules, on the tokenizers' JSON (no tokenization needed).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use crate::config::{RowSource, TokenRef, TokenizerConfig, VocabSource};
use crate::error::{MergeError, Result};
use crate::model_ref::ModelRef;

/// One input model's tokenizer, as far as merging needs it.
#[derive(Clone, Debug)]
pub struct ModelTokenizer {
    /// `tokenizer.json`.
    pub json: Value,
    /// `tokenizer_config.json`, if the model has one.
    pub config: Option<Value>,
    /// The model's vocabulary size (`vocab_size` in its config, else the tokenizer's).
    pub vocab_size: usize,
}

/// Where one output embedding row of one model comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// Row `row` of model `model`'s tensor (models by index in the merge).
    Model {
        model: usize,
        row: usize,
    },
    Zero,
    /// The mean of these rows.
    Mean(Vec<(usize, usize)>),
    /// The mean of this model's rows for the real vocabulary (padding rows).
    PadMean,
}

/// The merged vocabulary and the row alignment of every input model.
#[derive(Debug)]
pub struct Vocabulary {
    /// The output `tokenizer.json` and `tokenizer_config.json`.
    pub tokenizer: Value,
    pub tokenizer_config: Option<Value>,
    /// Rows of the real vocabulary (before padding).
    pub real: usize,
    /// Rows after `pad_to_multiple_of`.
    pub padded: usize,
    /// For each input model (merge order), the source of each output row.
    pub rows: Vec<Vec<Row>>,
    /// Tokens no model has (their rows are zero).
    pub missing: Vec<String>,
}

/// Builds the vocabulary for models `refs` (their tokenizers in `tokenizers`; `None`
/// for a model without one, which is assumed to share the base's), with `base` the
/// base model's index and `source_tokenizer` the tokenizer of a `source: <model>`.
pub fn build(
    config: &TokenizerConfig,
    refs: &[ModelRef],
    tokenizers: &[Option<ModelTokenizer>],
    base: usize,
    source_tokenizer: Option<&ModelTokenizer>,
) -> Result<Vocabulary> {
    let base_tok = tokenizers[base].as_ref().ok_or_else(|| {
        error(&refs[base], "has no tokenizer.json; a tokenizer merge starts from the base's")
    })?;
    let stripped =
        strip(&base_tok.json, base_tok.vocab_size).map_err(|m| error(&refs[base], &m))?;
    let (mut tokenizer, tokenizer_config) = match &config.source {
        VocabSource::Base => (stripped, base_tok.config.clone()),
        VocabSource::Union => (union(&stripped, base, tokenizers)?, base_tok.config.clone()),
        VocabSource::Model(_) => {
            let source = source_tokenizer.ok_or_else(|| {
                MergeError::config("tokenizer.source", "the source model has no tokenizer.json")
            })?;
            (source.json.clone(), source.config.clone())
        }
    };
    let mut adder = Adder::new(&tokenizer)?;
    for (token, _) in &config.tokens {
        adder.add(&mut tokenizer, token, &json!({"special": false, "normalized": true}))?;
    }
    let out = full_vocab(&tokenizer).map_err(|m| MergeError::config("tokenizer", m))?;
    let real = out.iter().map(|(_, id)| id + 1).max().unwrap_or(0);
    if real > 2 * out.len() + 1024 {
        return Err(MergeError::config(
            "tokenizer",
            format!(
                "the merged tokenizer has {} tokens but ids up to {}; its tokenizer.json is \
                 damaged",
                out.len(),
                real - 1
            ),
        ));
    }
    let padded = match config.pad_to_multiple_of {
        Some(n) => real.div_ceil(n) * n,
        None => real,
    };
    let vocabs: Vec<HashMap<String, usize>> = tokenizers
        .iter()
        .map(|t| {
            let t = t.as_ref().unwrap_or(base_tok);
            let vocab = full_vocab(&t.json).unwrap_or_default();
            vocab.into_iter().filter(|(_, id)| *id < t.vocab_size).collect()
        })
        .collect();
    let settings: HashMap<&str, _> = config.tokens.iter().map(|(t, s)| (t.as_str(), s)).collect();
    let mut by_id = vec![None; real];
    for (token, id) in &out {
        by_id[*id] = Some(token.as_str());
    }
    let mut rows = vec![Vec::with_capacity(padded); refs.len()];
    let mut missing = Vec::new();
    for token in &by_id {
        let Some(token) = *token else {
            rows.iter_mut().for_each(|r| r.push(Row::Zero));
            continue;
        };
        let setting = settings.get(token);
        let default =
            default_row(token, setting.and_then(|s| s.source.as_ref()), refs, &vocabs, base)?;
        if default == Row::Zero && setting.is_none() {
            missing.push(token.to_owned());
        }
        let force = setting.is_some_and(|s| s.force);
        for (m, model_rows) in rows.iter_mut().enumerate() {
            model_rows.push(match vocabs[m].get(token) {
                Some(&row) if !force => Row::Model { model: m, row },
                _ => default.clone(),
            });
        }
    }
    for model_rows in &mut rows {
        model_rows.resize(padded, Row::PadMean);
    }
    Ok(Vocabulary { tokenizer, tokenizer_config, real, padded, rows, missing })
}

fn error(model: &ModelRef, message: &str) -> MergeError {
    MergeError::Model { model: model.to_string(), message: message.to_owned() }
}

/// The row a token gets where a model lacks it (or it is forced): the configured source,
/// else the one model that has it, else zeros if none has, else the base's, else the
/// mean of the models that have it.
fn default_row(
    token: &str,
    source: Option<&RowSource>,
    refs: &[ModelRef],
    vocabs: &[HashMap<String, usize>],
    base: usize,
) -> Result<Row> {
    let location = || format!("tokenizer.tokens[{token:?}].source");
    let index = |model: &ModelRef| {
        refs.iter().position(|r| r == model).ok_or_else(|| {
            MergeError::config(location(), format!("{model} is not one of the merged models"))
        })
    };
    match source {
        Some(RowSource::Zero) => return Ok(Row::Zero),
        Some(RowSource::Model(model)) => {
            let m = index(model)?;
            let row = vocabs[m].get(token).copied().ok_or_else(|| {
                MergeError::config(location(), format!("{model} has no token {token:?}"))
            })?;
            return Ok(Row::Model { model: m, row });
        }
        Some(RowSource::ModelToken { model, token: which }) => {
            let m = index(model)?;
            let row = match which {
                TokenRef::Text(text) => vocabs[m].get(text).copied(),
                TokenRef::Id(id) => vocabs[m].values().any(|v| v == id).then_some(*id),
            };
            let row = row.ok_or_else(|| {
                MergeError::config(location(), format!("{model} has no token {which:?}"))
            })?;
            return Ok(Row::Model { model: m, row });
        }
        None => {}
    }
    let have: Vec<(usize, usize)> =
        vocabs.iter().enumerate().filter_map(|(m, v)| v.get(token).map(|&r| (m, r))).collect();
    Ok(match have.as_slice() {
        [] => Row::Zero,
        [(model, row)] => Row::Model { model: *model, row: *row },
        _ => match vocabs[base].get(token) {
            Some(&row) => Row::Model { model: base, row },
            None => Row::Mean(have),
        },
    })
}

/// Every token of a tokenizer with its id: the model's vocabulary and the added tokens.
pub fn full_vocab(json: &Value) -> std::result::Result<Vec<(String, usize)>, String> {
    let model = json.get("model").ok_or("tokenizer.json has no model")?;
    let mut out: Vec<(String, usize)> = match model.get("vocab") {
        Some(Value::Object(map)) => {
            map.iter().filter_map(|(t, id)| Some((t.clone(), id.as_u64()? as usize))).collect()
        }
        // Unigram: [[piece, score], ...] by id.
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(id, e)| Some((e.get(0)?.as_str()?.to_owned(), id)))
            .collect(),
        _ => return Err("tokenizer.json has no model vocabulary".into()),
    };
    let mut known: HashSet<String> = out.iter().map(|(t, _)| t.clone()).collect();
    for (token, id, _) in added_tokens(json) {
        if known.insert(token.clone()) {
            out.push((token, id));
        }
    }
    Ok(out)
}

/// The tokenizer without ids at or past `vocab_size` (BPE only, as in mergekit).
fn strip(json: &Value, vocab_size: usize) -> std::result::Result<Value, String> {
    let vocab = full_vocab(json)?;
    let unused: Vec<&str> =
        vocab.iter().filter(|(_, id)| *id >= vocab_size).map(|(t, _)| t.as_str()).collect();
    if unused.is_empty() {
        return Ok(json.clone());
    }
    let kind = json["model"].get("type").and_then(Value::as_str).unwrap_or("unknown");
    if kind != "BPE" {
        return Err(format!(
            "its tokenizer has {} tokens past its vocab_size {vocab_size} and is of type {kind}; \
             only BPE tokenizers can be cut down for a tokenizer merge",
            unused.len()
        ));
    }
    let mut out = json.clone();
    if let Some(added) = out.get_mut("added_tokens").and_then(Value::as_array_mut) {
        added.retain(|e| {
            e.get("id").and_then(Value::as_u64).is_some_and(|id| (id as usize) < vocab_size)
        });
    }
    if let Some(map) = out["model"].get_mut("vocab").and_then(Value::as_object_mut) {
        unused.iter().for_each(|t| {
            map.remove(*t);
        });
    }
    let uses_unused = |merge: &Value| -> bool {
        let parts: Vec<&str> = match merge {
            Value::String(s) => s.split(' ').collect(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        parts.iter().any(|p| unused.contains(p))
    };
    if let Some(merges) = out["model"].get_mut("merges").and_then(Value::as_array_mut) {
        merges.retain(|m| !uses_unused(m));
    }
    Ok(out)
}

/// mergekit's union: the base's tokenizer plus, in model order, every other model's
/// ordinary tokens it lacks, then every model's added tokens (the first settings seen
/// win).
fn union(base_json: &Value, base: usize, tokenizers: &[Option<ModelTokenizer>]) -> Result<Value> {
    let order = std::iter::once(base).chain((0..tokenizers.len()).filter(|&m| m != base));
    let mut ordinary: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut added: Vec<(String, Value)> = Vec::new();
    let mut added_seen: HashSet<String> = HashSet::new();
    for m in order {
        let Some(t) = &tokenizers[m] else { continue };
        let json = if m == base { base_json } else { &t.json };
        let specials = added_tokens(json);
        let special_set: HashSet<&str> = specials.iter().map(|(s, _, _)| s.as_str()).collect();
        let mut vocab = full_vocab(json).map_err(|e| MergeError::config("tokenizer", e))?;
        vocab.sort_by_key(|(_, id)| *id);
        for (token, id) in vocab {
            if id < t.vocab_size
                && !special_set.contains(token.as_str())
                && seen.insert(token.clone())
            {
                ordinary.push(token);
            }
        }
        for (token, id, settings) in specials {
            if id < t.vocab_size && added_seen.insert(token.clone()) {
                added.push((token, settings));
            }
        }
    }
    let mut out = base_json.clone();
    let mut adder = Adder::new(&out)?;
    for token in ordinary.iter().filter(|t| !added_seen.contains(*t)) {
        adder.add(&mut out, token, &json!({"special": false, "normalized": true}))?;
    }
    for (token, settings) in &added {
        adder.add(&mut out, token, settings)?;
    }
    Ok(out)
}

/// A tokenizer's added tokens: (content, id, the whole entry).
fn added_tokens(json: &Value) -> Vec<(String, usize, Value)> {
    let list = amalgam_gguf::tokenizer::added_tokens(json);
    list.into_iter().map(|t| (t.content.to_owned(), t.id, t.entry.clone())).collect()
}

/// Adds tokens to a tokenizer as the tokenizers library does: a token it has already is
/// left alone; a new one gets the model vocabulary's size as id, or one past the largest
/// added id when that is beyond it.
struct Adder {
    present: HashSet<String>,
    model_size: usize,
    max_added: Option<usize>,
}

impl Adder {
    fn new(json: &Value) -> Result<Adder> {
        let vocab = full_vocab(json).map_err(|e| MergeError::config("tokenizer", e))?;
        let model_size = match json["model"].get("vocab") {
            Some(Value::Object(m)) => m.len(),
            Some(Value::Array(a)) => a.len(),
            _ => 0,
        };
        let max_added = added_tokens(json).iter().map(|(_, id, _)| *id).max();
        Ok(Adder { present: vocab.into_iter().map(|(t, _)| t).collect(), model_size, max_added })
    }

    /// Adds `token` with `settings` (special, normalized, ...) to `json`.
    fn add(&mut self, json: &mut Value, token: &str, settings: &Value) -> Result<()> {
        if !self.present.insert(token.to_owned()) {
            return Ok(());
        }
        let id = match self.max_added {
            Some(max) if max >= self.model_size => max + 1,
            _ => self.model_size,
        };
        self.max_added = Some(id);
        let special = settings.get("special").and_then(Value::as_bool).unwrap_or(false);
        let flag = |key: &str, default: bool| {
            settings.get(key).and_then(Value::as_bool).unwrap_or(default)
        };
        let entry = json!({
            "id": id,
            "content": token,
            "single_word": flag("single_word", false),
            "lstrip": flag("lstrip", false),
            "rstrip": flag("rstrip", false),
            "normalized": flag("normalized", !special),
            "special": special,
        });
        let list = json
            .as_object_mut()
            .map(|o| o.entry("added_tokens").or_insert_with(|| Value::Array(Vec::new())));
        match list {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                return Err(MergeError::config(
                    "tokenizer",
                    "tokenizer.json is not an object with an added_tokens list",
                ));
            }
        }
        Ok(())
    }
}

/// The output `tokenizer_config.json`: the source's, with `added_tokens_decoder` (when it
/// has one) listing every added token of the output tokenizer.
pub fn output_config(vocab: &Vocabulary) -> Option<Value> {
    let mut config = vocab.tokenizer_config.clone()?;
    if let Some(decoder) = config.get_mut("added_tokens_decoder").and_then(Value::as_object_mut) {
        for (token, id, entry) in added_tokens(&vocab.tokenizer) {
            let mut e: Map<String, Value> = entry.as_object().cloned().unwrap_or_default();
            e.remove("id");
            e.insert("content".into(), Value::String(token));
            decoder.insert(id.to_string(), Value::Object(e));
        }
    }
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenSetting;

    /// A BPE tokenizer with ordinary tokens `vocab` (ids in order) and added `specials`.
    fn tok(vocab: &[&str], specials: &[&str], vocab_size: Option<usize>) -> ModelTokenizer {
        let map: Map<String, Value> =
            vocab.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
        let added: Vec<Value> = specials
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"id": vocab.len() + i, "content": t, "special": true, "normalized": false}))
            .collect();
        let json =
            json!({"model": {"type": "BPE", "vocab": map, "merges": []}, "added_tokens": added});
        ModelTokenizer {
            json,
            config: None,
            vocab_size: vocab_size.unwrap_or(vocab.len() + specials.len()),
        }
    }

    fn refs(n: usize) -> Vec<ModelRef> {
        (0..n).map(|i| ModelRef::parse(&format!("m{i}")).unwrap()).collect()
    }

    fn config(source: VocabSource) -> TokenizerConfig {
        TokenizerConfig { source, tokens: Vec::new(), pad_to_multiple_of: None }
    }

    #[test]
    fn union_adds_other_models_tokens_and_aligns_rows() {
        let a = tok(&["a", "b", "c"], &["<s>"], None);
        let b = tok(&["a", "c", "d"], &["<s>", "<x>"], None);
        let v = build(&config(VocabSource::Union), &refs(2), &[Some(a), Some(b)], 0, None).unwrap();
        let vocab: HashMap<String, usize> = full_vocab(&v.tokenizer).unwrap().into_iter().collect();
        // Base ids kept; "d" then "<x>" appended after the base's 4 tokens.
        assert_eq!((vocab["a"], vocab["<s>"], vocab["d"], vocab["<x>"]), (0, 3, 4, 5));
        assert_eq!(v.real, 6);
        // Model 1 ("b") has "c" at row 1 and "<s>" at row 3; it lacks "b" (base only: the
        // base's row) and "d" is its own.
        assert_eq!(v.rows[1][2], Row::Model { model: 1, row: 1 });
        assert_eq!(v.rows[1][1], Row::Model { model: 0, row: 1 });
        assert_eq!(v.rows[0][4], Row::Model { model: 1, row: 2 });
        assert_eq!(v.rows[0][5], Row::Model { model: 1, row: 4 });
    }

    #[test]
    fn shared_tokens_the_base_lacks_are_averaged_and_padding_is_the_mean() {
        let base = tok(&["a"], &[], None);
        let (x, y) = (tok(&["a", "z"], &[], None), tok(&["z", "a"], &[], None));
        let mut c = config(VocabSource::Union);
        c.pad_to_multiple_of = Some(4);
        let v = build(&c, &refs(3), &[Some(base), Some(x), Some(y)], 0, None).unwrap();
        assert_eq!((v.real, v.padded), (2, 4));
        assert_eq!(v.rows[0][1], Row::Mean(vec![(1, 1), (2, 0)]));
        assert_eq!(v.rows[2][1], Row::Model { model: 2, row: 0 });
        assert_eq!(v.rows[0][3], Row::PadMean);
    }

    #[test]
    fn base_source_strips_unused_ids_and_tokens_settings_apply() {
        // The base tokenizer lists 4 tokens but the model has only 3 rows.
        let base = tok(&["a", "b", "c", "unused"], &[], Some(3));
        let other = tok(&["a", "b", "c"], &[], None);
        let mut c = config(VocabSource::Base);
        c.tokens = vec![
            ("b".into(), TokenSetting { source: Some(RowSource::Zero), force: true }),
            (
                "new".into(),
                TokenSetting { source: Some(RowSource::Model(refs(2)[1].clone())), force: false },
            ),
        ];
        let err =
            build(&c, &refs(2), &[Some(base.clone()), Some(other.clone())], 0, None).unwrap_err();
        assert!(err.to_string().contains("m1 has no token \"new\""), "{err}");
        c.tokens.pop();
        let v = build(&c, &refs(2), &[Some(base), Some(other)], 0, None).unwrap();
        assert_eq!(v.real, 3, "\"unused\" stripped");
        assert_eq!(v.rows[0][1], Row::Zero, "forced");
        assert_eq!(v.rows[1][2], Row::Model { model: 1, row: 2 });
    }
}
