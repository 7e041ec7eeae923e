//! `tokenizer.*` metadata, built the way llama.cpp's converter builds it: from a
//! SentencePiece `tokenizer.model` (`tokenizer.ggml.model = llama`, Llama 2 and Mistral)
//! when there is one, else from a byte-level BPE `tokenizer.json` (`gpt2`): tokens indexed
//! by id, their types, scores or merges, special ids, `add_bos`/`add_eos`, and the chat
//! template. The BPE pre-tokenizer name is chosen by the caller (by the hash of a probe
//! encoding); [`guess_pre`] is the fallback.

use serde_json::{Map, Value as Json};

use crate::error::{GgufError, Result};
use crate::value::{Value, ValueType};

/// llama.cpp's token types.
pub const NORMAL: i32 = 1;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;

/// The tokenizer files of a model folder, parsed.
pub struct TokenizerFiles {
    /// `tokenizer.json` (`Null` when absent).
    pub tokenizer: Json,
    /// The bytes of a SentencePiece `tokenizer.model`, when present.
    pub sentencepiece: Option<Vec<u8>>,
    pub config: Option<Json>,
    /// `added_tokens.json`, which SentencePiece models may carry.
    pub added_tokens: Option<Json>,
    /// `chat_template.jinja`, when the template lives in its own file.
    pub chat_template_file: Option<String>,
}

/// The special-token kinds GGUF records, with their key names.
const SPECIALS: &[(&str, &str)] = &[
    ("bos", "bos_token_id"),
    ("eos", "eos_token_id"),
    ("unk", "unknown_token_id"),
    ("sep", "seperator_token_id"),
    ("pad", "padding_token_id"),
    ("cls", "cls_token_id"),
    ("mask", "mask_token_id"),
];

/// Whether an added token that is not marked special still looks like a control token.
fn looks_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

/// The `tokenizer.*` metadata. `vocab_size` is the embedding's row count; ids without a
/// token become `[PAD<id>]`, typed unused, as in llama.cpp's converter.
pub fn metadata(
    files: &TokenizerFiles,
    model_config: &Map<String, Json>,
    vocab_size: usize,
    pre: &str,
) -> Result<Vec<(String, Value)>> {
    // As llama.cpp's Llama converter: SentencePiece first, then BPE. A Llama 3
    // `tokenizer.model` is tiktoken text, not protobuf, and falls through to BPE.
    let sp = files.sentencepiece.as_deref().and_then(|b| crate::sentencepiece::parse(b).ok());
    let mut out = match &sp {
        Some(model) => {
            let added = files.added_tokens.as_ref().and_then(Json::as_object);
            crate::sentencepiece::metadata(model, added, vocab_size)
        }
        None => bpe_metadata(files, vocab_size, pre)?,
    };
    let tokens: Vec<String> = out
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .and_then(|(_, v)| v.as_array())
        .map(|a| a.iter().map(|t| t.as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    for (kind, key) in SPECIALS {
        if let Some(id) = special_id(kind, files, &tokens, model_config) {
            out.push((format!("tokenizer.ggml.{key}"), Value::U32(id as u32)));
        }
    }
    for (flag, key) in [("add_bos_token", "add_bos_token"), ("add_eos_token", "add_eos_token")] {
        if let Some(v) = add_flag(flag, files) {
            out.push((format!("tokenizer.ggml.{key}"), Value::Bool(v)));
        }
    }
    if let Some(template) = chat_template(files) {
        out.push(("tokenizer.chat_template".to_owned(), Value::String(template)));
    }
    Ok(out)
}

/// Tokens, types and merges of a byte-level BPE `tokenizer.json`.
fn bpe_metadata(
    files: &TokenizerFiles,
    vocab_size: usize,
    pre: &str,
) -> Result<Vec<(String, Value)>> {
    let model = files
        .tokenizer
        .get("model")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("no \"model\" object"))?;
    if model.get("type").and_then(Json::as_str) != Some("BPE") {
        return Err(GgufError::Convert(
            "tokenizer.json is not a BPE tokenizer; only byte-level BPE (gpt2) tokenizers are converted so far".into(),
        ));
    }
    let vocab =
        model.get("vocab").and_then(Json::as_object).ok_or_else(|| bad("no model.vocab"))?;
    let added = added_tokens(&files.tokenizer);
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    for (token, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = Some((token.clone(), NORMAL));
        }
    }
    for t in &added {
        if let Some(slot) = tokens.get_mut(t.id) {
            let kind = if t.special || looks_special(t.content) { CONTROL } else { USER_DEFINED };
            *slot = Some((t.content.to_owned(), kind));
        }
    }
    let (names, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED)))
        .unzip();
    Ok(vec![
        ("tokenizer.ggml.model".to_owned(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_owned(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".to_owned(), Value::strings(names)),
        (
            "tokenizer.ggml.token_type".to_owned(),
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".to_owned(), Value::strings(merges(model)?)),
    ])
}

fn bad(what: &str) -> GgufError {
    GgufError::Convert(format!(
        "tokenizer.json has {what}; it is not a Hugging Face fast tokenizer"
    ))
}

/// One entry of a `tokenizer.json`'s `added_tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct AddedToken<'a> {
    pub id: usize,
    pub content: &'a str,
    pub special: bool,
    /// The whole entry (`normalized`, `lstrip`, … as written).
    pub entry: &'a Json,
}

/// Every added token of a `tokenizer.json` (entries without an id or content skipped):
/// the one reader of the list, for GGUF metadata and for merged vocabularies.
pub fn added_tokens(tokenizer: &Json) -> Vec<AddedToken<'_>> {
    let list = tokenizer.get("added_tokens").and_then(Json::as_array);
    list.into_iter()
        .flatten()
        .filter_map(|entry| {
            Some(AddedToken {
                id: usize::try_from(entry.get("id")?.as_u64()?).ok()?,
                content: entry.get("content")?.as_str()?,
                special: entry.get("special").and_then(Json::as_bool).unwrap_or(false),
                entry,
            })
        })
        .collect()
}

/// Merges as `"left right"`; pair-form merges have spaces inside a part written as `Ġ`.
fn merges(model: &Map<String, Json>) -> Result<Vec<String>> {
    let Some(list) = model.get("merges").and_then(Json::as_array) else { return Ok(Vec::new()) };
    list.iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) if pair.len() == 2 => {
                let part = |p: &Json| p.as_str().map(|s| s.replace(' ', "\u{0120}"));
                match (part(&pair[0]), part(&pair[1])) {
                    (Some(a), Some(b)) => Ok(format!("{a} {b}")),
                    _ => Err(bad("a merge that is not two strings")),
                }
            }
            _ => Err(bad("a malformed merge")),
        })
        .collect()
}

/// A special token's id: from `tokenizer_config.json`'s `<kind>_token` matched against
/// the token list, else `config.json`'s integer `<kind>_token_id`.
fn special_id(
    kind: &str,
    files: &TokenizerFiles,
    tokens: &[String],
    model_config: &Map<String, Json>,
) -> Option<usize> {
    let entry = files.config.as_ref().and_then(|c| c.get(format!("{kind}_token")));
    let content = entry.and_then(|e| e.as_str().or_else(|| e.get("content")?.as_str()));
    if let Some(content) = content
        && let Some(id) = tokens.iter().position(|t| t == content)
    {
        return Some(id);
    }
    model_config.get(&format!("{kind}_token_id")).and_then(Json::as_u64).map(|v| v as usize)
}

/// `add_bos_token` / `add_eos_token`: from `tokenizer_config.json`, else whether the
/// post-processor's single-sequence template starts (ends) with the BOS (EOS) token.
fn add_flag(flag: &str, files: &TokenizerFiles) -> Option<bool> {
    let config = files.config.as_ref();
    if let Some(v) = config.and_then(|c| c.get(flag)).and_then(Json::as_bool) {
        return Some(v);
    }
    let processor = files.tokenizer.get("post_processor")?;
    let single = processor.get("single").and_then(Json::as_array).or_else(|| {
        processor.get("processors")?.as_array()?.iter().find_map(|p| p.get("single")?.as_array())
    })?;
    let (kind, edge) =
        if flag == "add_bos_token" { ("bos", single.first()) } else { ("eos", single.last()) };
    let edge = edge.and_then(|i| i.get("SpecialToken")?.get("id")?.as_str());
    let token = config
        .and_then(|c| c.get(format!("{kind}_token")))
        .and_then(|e| e.as_str().or_else(|| e.get("content")?.as_str()));
    Some(match (edge, token) {
        (Some(e), Some(t)) => e == t,
        (Some(_), None) => true,
        (None, _) => false,
    })
}

/// The chat template: `tokenizer_config.json`'s (a string, or the `default` of a named
/// list), else `chat_template.jinja`.
fn chat_template(files: &TokenizerFiles) -> Option<String> {
    let from_config =
        files.config.as_ref().and_then(|c| c.get("chat_template")).and_then(|t| match t {
            Json::String(s) => Some(s.clone()),
            Json::Array(list) => list
                .iter()
                .find(|e| e.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|e| e.get("template")?.as_str().map(str::to_owned)),
            _ => None,
        });
    from_config.or_else(|| files.chat_template_file.clone())
}

/// The llama.cpp pre-tokenizer for a `tokenizer.json` recognised by its pre-tokenizer
/// definition rather than by a probe encoding: Llama 3's split regex (`llama-bpe`),
/// SmolLM's digits-then-byte-level sequence (`smollm`), plain GPT-2 byte-level (`gpt-2`).
pub fn guess_pre(tokenizer: &Json) -> Option<&'static str> {
    let pre = tokenizer.get("pre_tokenizer")?;
    let text = pre.to_string();
    if text.contains(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)") && text.contains(r"\\p{N}{1,3}") {
        return Some("llama-bpe");
    }
    let kind = pre.get("type").and_then(Json::as_str)?;
    let steps = pre.get("pretokenizers").and_then(Json::as_array);
    let step_types: Vec<&str> = steps
        .map(|s| s.iter().filter_map(|p| p.get("type")?.as_str()).collect())
        .unwrap_or_default();
    match (kind, step_types.as_slice()) {
        ("Sequence", ["Digits", "ByteLevel"]) => Some("smollm"),
        ("ByteLevel", _) if pre.get("use_regex").and_then(Json::as_bool) != Some(false) => {
            Some("gpt-2")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn files() -> TokenizerFiles {
        TokenizerFiles {
            tokenizer: json!({
                "added_tokens": [
                    {"id": 4, "content": "<|begin_of_text|>", "special": true},
                    {"id": 5, "content": "<|eot_id|>", "special": false},
                    {"id": 6, "content": "hello world", "special": false}
                ],
                "post_processor": {"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3},
                          "merges": [["a", "b"], "Ġ a"]}
            }),
            config: Some(
                json!({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"},
                                "chat_template": "{{ messages }}"}),
            ),
            sentencepiece: None,
            added_tokens: None,
            chat_template_file: None,
        }
    }

    #[test]
    fn builds_llama_cpp_vocab_metadata() {
        let config = json!({"pad_token_id": 3});
        let meta = metadata(&files(), config.as_object().unwrap(), 8, "gpt-2").unwrap();
        let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        let tokens: Vec<String> = get("tokenizer.ggml.tokens")
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            tokens,
            ["a", "b", "ab", "Ġ", "<|begin_of_text|>", "<|eot_id|>", "hello world", "[PAD7]"]
        );
        let types: Vec<Value> = get("tokenizer.ggml.token_type").as_array().unwrap().to_vec();
        assert_eq!(types[4], Value::I32(CONTROL));
        assert_eq!(types[5], Value::I32(CONTROL), "looks special");
        assert_eq!(types[6], Value::I32(USER_DEFINED));
        assert_eq!(types[7], Value::I32(UNUSED));
        assert_eq!(get("tokenizer.ggml.merges"), Value::strings(["a b", "Ġ a"]));
        assert_eq!(get("tokenizer.ggml.bos_token_id"), Value::U32(4));
        assert_eq!(get("tokenizer.ggml.eos_token_id"), Value::U32(5));
        assert_eq!(get("tokenizer.ggml.padding_token_id"), Value::U32(3));
        assert_eq!(get("tokenizer.ggml.add_bos_token"), Value::Bool(true));
        assert_eq!(get("tokenizer.ggml.add_eos_token"), Value::Bool(false));
        assert_eq!(get("tokenizer.chat_template"), Value::String("{{ messages }}".into()));
    }

    #[test]
    fn guesses_pre_tokenizers_by_definition() {
        assert_eq!(guess_pre(&files().tokenizer), Some("gpt-2"));
        let smollm = json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, {"type": "ByteLevel", "use_regex": true}]}});
        assert_eq!(guess_pre(&smollm), Some("smollm"));
        assert_eq!(guess_pre(&json!({"pre_tokenizer": {"type": "Metaspace"}})), None);
    }
}
