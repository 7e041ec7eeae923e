//! The tokenizer keys of a merge config: `tokenizer_source`, `tokenizer` (its source and
//! per-token embedding rules) and `chat_template`, parsed with their key paths.

use yaml_serde::{Mapping, Value as Yaml};

use super::*;

/// `tokenizer_source`, `tokenizer` and `chat_template`: parsed and checked here, applied
/// by the merge run.
pub(super) fn tokenizer_fields(
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
            super::chat_template::validate(s)
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
