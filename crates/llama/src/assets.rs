//! What a model needs besides weights to talk: the tokenizer, the chat template and its
//! special tokens, the stop ids and the sampling defaults — from a Hugging Face folder's
//! files or from a GGUF's metadata.

use std::path::Path;

use amalgam_gguf::GgufModel;
use amalgam_tensors::folder::read_json;
use serde_json::{Map, Value};

use crate::config::ids;
use crate::error::{Error, Result};
use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// Sampling defaults from `generation_config.json`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationDefaults {
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

/// A model's tokenizer and chat settings.
pub struct Assets {
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub defaults: GenerationDefaults,
    /// Token ids that end an answer.
    pub stop: Vec<u32>,
}

/// End-of-generation token texts llama.cpp recognizes by name.
const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|eom_id|>",
];

impl Assets {
    /// Reads `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja` and
    /// `generation_config.json` from `root`; `config` is its `config.json`.
    pub fn from_folder(root: &Path, config: &Map<String, Value>) -> Result<Assets> {
        let path = root.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Tokenizer {
                path,
                reason: "not found; the engine needs a tokenizer.json beside the weights \
                         (copy the base model's)"
                    .into(),
            });
        }
        let tokenizer = Tokenizer::from_file(&path)?;
        let tok_config = read_object(&root.join("tokenizer_config.json"))?;
        let generation = read_object(&root.join("generation_config.json"))?;
        let jinja = std::fs::read_to_string(root.join("chat_template.jinja")).ok();
        Ok(Assets::assemble(tokenizer, &tok_config, jinja, &generation, config, &[]))
    }

    /// The tokenizer and settings a GGUF carries in its metadata.
    pub fn from_gguf(model: &GgufModel) -> Result<Assets> {
        let path = model.file().path();
        let files = model.tokenizer_files().ok_or_else(|| Error::Tokenizer {
            path: path.to_owned(),
            reason: "has no tokenizer.ggml.* metadata the engine can use".into(),
        })?;
        let find = |name: &str| files.iter().find(|(n, _)| *n == name).map(|(_, b)| b.as_slice());
        let Some(json) = find("tokenizer.json") else {
            return Err(Error::Tokenizer {
                path: path.to_owned(),
                reason: "has a vocabulary the engine cannot rebuild (it runs gpt2-style BPE \
                         and SentencePiece `llama` vocabularies)"
                    .into(),
            });
        };
        let tokenizer = Tokenizer::from_bytes(json, path)?;
        let parse = |name: &str| -> Map<String, Value> {
            find(name)
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default()
        };
        let eog: Vec<u32> = EOG_NAMES.iter().filter_map(|n| tokenizer.token_id(n)).collect();
        let (tok_config, generation) =
            (parse("tokenizer_config.json"), parse("generation_config.json"));
        Ok(Assets::assemble(tokenizer, &tok_config, None, &generation, model.config(), &eog))
    }

    /// Replaces the chat template's source (a merge config's `chat_template`), keeping
    /// the BOS and EOS texts it renders with.
    pub fn set_template(&mut self, source: String) {
        match &mut self.template {
            Some(t) => t.source = source,
            None => {
                let (bos_token, eos_token) = (String::new(), String::new());
                self.template = Some(ChatTemplate { source, bos_token, eos_token });
            }
        }
    }

    fn assemble(
        tokenizer: Tokenizer,
        tok_config: &Map<String, Value>,
        jinja: Option<String>,
        generation: &Map<String, Value>,
        config: &Map<String, Value>,
        extra_stop: &[u32],
    ) -> Assets {
        let token_text = |key: &str| match tok_config.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => {
                o.get("content").and_then(Value::as_str).unwrap_or("").to_owned()
            }
            _ => String::new(),
        };
        let source = jinja.or_else(|| template_of(tok_config.get("chat_template")));
        let eos_text = token_text("eos_token");
        let template = source.map(|source| ChatTemplate {
            source,
            bos_token: token_text("bos_token"),
            eos_token: eos_text.clone(),
        });
        let mut stop = ids(generation.get("eos_token_id"));
        stop.extend(ids(config.get("eos_token_id")));
        stop.extend(tokenizer.token_id(&eos_text));
        stop.extend_from_slice(extra_stop);
        stop.sort_unstable();
        stop.dedup();
        let num = |key: &str| generation.get(key).and_then(Value::as_f64).map(|v| v as f32);
        let defaults = GenerationDefaults {
            do_sample: generation.get("do_sample").and_then(Value::as_bool),
            temperature: num("temperature"),
            top_k: generation.get("top_k").and_then(Value::as_u64).map(|v| v as usize),
            top_p: num("top_p"),
            min_p: num("min_p"),
            repetition_penalty: num("repetition_penalty"),
        };
        Assets { tokenizer, template, defaults, stop }
    }
}

/// A `chat_template` setting: a string, or a list of named templates (the `default` one).
fn template_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |want: &str| {
                list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(want))
            };
            named("default")
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        }
        _ => None,
    }
}

/// A JSON object file, or an empty object if the file is absent.
fn read_object(path: &Path) -> Result<Map<String, Value>> {
    if !path.is_file() {
        return Ok(Map::new());
    }
    match read_json(path)? {
        Value::Object(map) => Ok(map),
        _ => Err(Error::Invalid(format!("{}: expected a JSON object", path.display()))),
    }
}
