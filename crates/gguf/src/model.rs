//! A GGUF Llama model seen as a Hugging Face model: a `config.json` rebuilt from the
//! metadata, HF tensor names and shapes, values dequantized with Q/K rows put back in HF
//! order, and the tokenizer files (`tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`) rebuilt from the token list and merges.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value as Json, json};

use crate::error::{GgufError, Result};
use crate::ggml_type::GgmlType;
use crate::names;
use crate::quant;
use crate::read::{GgufFile, TensorInfo};
use crate::value::Value;

/// Where an HF tensor lives in the GGUF.
struct Entry {
    /// Which part of a split model.
    part: usize,
    index: usize,
    /// HF shape, outermost first.
    shape: Vec<usize>,
    /// Heads to un-permute over (Q and K).
    heads: Option<usize>,
}

/// An open GGUF model with a Hugging Face view.
pub struct GgufModel {
    /// The file, or every part of a split file (the first holds the metadata).
    parts: Vec<GgufFile>,
    config: Map<String, Json>,
    tensors: HashMap<String, Entry>,
}

impl GgufModel {
    /// Opens a GGUF file of a Llama-family model; the first part of a split model
    /// (`…-00001-of-0000N.gguf`) opens all its parts.
    pub fn open(path: &Path) -> Result<GgufModel> {
        let paths = crate::split::parts_of(path).unwrap_or_else(|| vec![path.to_owned()]);
        let parts = paths.iter().map(|p| GgufFile::open(p)).collect::<Result<Vec<_>>>()?;
        let file = &parts[0];
        let arch = file.header.get("general.architecture").and_then(Value::as_str).unwrap_or("");
        if arch != "llama" {
            return Err(GgufError::Convert(format!(
                "{} is a {arch:?} model; amalgam reads Llama-architecture GGUF files only",
                path.display()
            )));
        }
        let config = hf_config(file, &parts)?;
        let (n_head, n_kv) =
            (usize_of(&config, "num_attention_heads"), usize_of(&config, "num_key_value_heads"));
        let mut tensors = HashMap::new();
        for (part, f) in parts.iter().enumerate() {
            for (index, t) in f.header.tensors.iter().enumerate() {
                let Some(hf) = names::gguf_to_hf(&t.name) else { continue };
                let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
                let heads = match names::permuted_heads(&t.name, n_head, n_kv) {
                    Some(h) if shape.len() == 2 => {
                        Some(names::checked_heads(&t.name, shape[0], h)?)
                    }
                    _ => None,
                };
                tensors.insert(hf, Entry { part, index, shape, heads });
            }
        }
        Ok(GgufModel { parts, config, tensors })
    }

    /// The rebuilt `config.json`.
    pub fn config(&self) -> &Map<String, Json> {
        &self.config
    }

    /// The GGUF file (the first part of a split model, which holds the metadata).
    pub fn file(&self) -> &GgufFile {
        &self.parts[0]
    }

    /// HF tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether the model has this HF tensor.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The HF shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|e| e.shape.as_slice())
    }

    /// The GGUF tensor behind an HF name.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|e| &self.parts[e.part].header.tensors[e.index])
    }

    /// Fills `out` with elements `start..` of the HF tensor `name` (row-major, HF order),
    /// dequantized to `f32`.
    pub fn read(&self, name: &str, start: usize, out: &mut [f32]) -> Result<()> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| GgufError::Convert(format!("no tensor {name}")))?;
        let file = &self.parts[entry.part];
        let info = &file.header.tensors[entry.index];
        let cols = info.dims[0] as usize;
        let rows = info.numel() as usize / cols.max(1);
        let row_bytes = (info.size as usize) / rows.max(1);
        let data = file.data(info);
        let mut row = vec![0f32; cols];
        let mut done = 0;
        let (mut low, mut high) = (usize::MAX, 0);
        while done < out.len() {
            let (r, c) = ((start + done) / cols, (start + done) % cols);
            if r >= rows {
                return Err(GgufError::Convert(format!("elements past the end of {name}")));
            }
            let stored = match entry.heads {
                Some(h) => names::gguf_row_of_hf_row(r, rows, h),
                None => r,
            };
            quant::dequantize(
                info.ty,
                &data[stored * row_bytes..(stored + 1) * row_bytes],
                &mut row,
            );
            low = low.min(stored * row_bytes);
            high = high.max((stored + 1) * row_bytes);
            let n = (cols - c).min(out.len() - done);
            out[done..done + n].copy_from_slice(&row[c..c + n]);
            done += n;
        }
        if high > low {
            file.release(info.offset + low as u64, info.offset + high as u64);
        }
        Ok(())
    }

    /// The stored bytes of the HF tensor `name` (Q and K rows in GGUF's permuted order),
    /// with its tensor info.
    pub fn raw(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let entry = self.tensors.get(name)?;
        let file = &self.parts[entry.part];
        let info = &file.header.tensors[entry.index];
        Some((info, file.data(info)))
    }

    /// A tensor by its GGUF name (`rope_freqs.weight`), from whichever part holds it.
    pub fn gguf_tensor(&self, gguf_name: &str) -> Option<(&TensorInfo, &[u8])> {
        self.parts.iter().find_map(|f| f.header.tensor(gguf_name).map(|t| (t, f.data(t))))
    }

    /// The dtype a tensor holds when stored unquantized, for keeping F16/BF16 as they are.
    pub fn stored_type(&self, name: &str) -> Option<GgmlType> {
        self.info(name).map(|t| t.ty)
    }

    /// The tokenizer files rebuilt from the GGUF tokenizer, as (file name, bytes):
    /// `tokenizer.json` for byte-level BPE (`gpt2`), `tokenizer.model` for SentencePiece
    /// (`llama`), each with `tokenizer_config.json` and `generation_config.json`.
    pub fn tokenizer_files(&self) -> Option<Vec<(&'static str, Vec<u8>)>> {
        let h = &self.parts[0].header;
        let kind = h.get("tokenizer.ggml.model").and_then(Value::as_str)?;
        let tokens = strings(h.get("tokenizer.ggml.tokens")?);
        let types: Vec<i64> = h
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |a| {
                a.iter().map(|v| if let Value::I32(t) = v { i64::from(*t) } else { 1 }).collect()
            });
        let id = |key: &str| h.get(key).and_then(Value::as_u64);
        let text = |key: &str| id(key).and_then(|i| tokens.get(i as usize)).cloned();
        let flag = |key: &str| matches!(h.get(key), Some(Value::Bool(true)));
        // llama.cpp adds BOS for SentencePiece vocabularies unless told otherwise.
        let add_bos = match h.get("tokenizer.ggml.add_bos_token") {
            Some(Value::Bool(b)) => *b,
            _ => kind == "llama",
        };
        let mut files = Vec::new();
        let (file, bytes, class) = match kind {
            "gpt2" => {
                let merges = h.get("tokenizer.ggml.merges").map(strings).unwrap_or_default();
                let pre = h.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
                let bos = text("tokenizer.ggml.bos_token_id");
                let json = crate::hf_tokenizer::bpe_json(
                    &tokens,
                    &types,
                    &merges,
                    pre,
                    bos.as_deref().filter(|_| add_bos),
                );
                ("tokenizer.json", pretty(&json), "PreTrainedTokenizerFast")
            }
            "llama" => {
                let json = self.spm_json(
                    &tokens,
                    &types,
                    text("tokenizer.ggml.bos_token_id").as_deref().filter(|_| add_bos),
                    text("tokenizer.ggml.unknown_token_id").as_deref(),
                );
                files.push(("tokenizer.json", pretty(&json)));
                ("tokenizer.model", self.sentencepiece(&tokens, &types), "LlamaTokenizer")
            }
            _ => return None,
        };
        let mut config = json!({
            "add_bos_token": add_bos,
            "add_eos_token": flag("tokenizer.ggml.add_eos_token"),
            "clean_up_tokenization_spaces": false,
            "model_max_length": self.config.get("max_position_embeddings").cloned().unwrap_or(json!(8192)),
            "tokenizer_class": class,
        });
        for (kind, key) in [
            ("bos", "bos_token_id"),
            ("eos", "eos_token_id"),
            ("unk", "unknown_token_id"),
            ("pad", "padding_token_id"),
        ] {
            if let Some(t) = text(&format!("tokenizer.ggml.{key}")) {
                config[format!("{kind}_token")] = json!(t);
            }
        }
        if let Some(template) = h.get("tokenizer.chat_template").and_then(Value::as_str) {
            config["chat_template"] = json!(template);
        }
        let mut generation = json!({});
        for (hf, key) in [
            ("bos_token_id", "bos_token_id"),
            ("eos_token_id", "eos_token_id"),
            ("pad_token_id", "padding_token_id"),
        ] {
            if let Some(v) = id(&format!("tokenizer.ggml.{key}")) {
                generation[hf] = json!(v);
            }
        }
        files.push((file, bytes));
        files.push(("tokenizer_config.json", pretty(&config)));
        files.push(("generation_config.json", pretty(&generation)));
        Some(files)
    }

    /// The SentencePiece vocabulary as a `tokenizer.json`.
    fn spm_json(
        &self,
        tokens: &[String],
        types: &[i64],
        bos: Option<&str>,
        unk: Option<&str>,
    ) -> Json {
        let h = &self.parts[0].header;
        crate::hf_tokenizer::spm_json(&crate::hf_tokenizer::SpmVocab {
            tokens,
            scores: &self.scores(),
            types,
            add_space_prefix: !matches!(
                h.get("tokenizer.ggml.add_space_prefix"),
                Some(Value::Bool(false))
            ),
            bos,
            unk,
        })
    }

    /// `tokenizer.ggml.scores`, or none.
    fn scores(&self) -> Vec<f32> {
        let h = &self.parts[0].header;
        h.get("tokenizer.ggml.scores")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |a| a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect())
    }

    /// A SentencePiece `tokenizer.model` from the token list, scores and types.
    fn sentencepiece(&self, tokens: &[String], types: &[i64]) -> Vec<u8> {
        let h = &self.parts[0].header;
        let scores = self.scores();
        let pieces = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| crate::sentencepiece::Piece {
                text: t.clone(),
                score: scores.get(i).copied().unwrap_or(0.0),
                kind: types.get(i).copied().unwrap_or(1) as i32,
            })
            .collect();
        let add_dummy_prefix =
            !matches!(h.get("tokenizer.ggml.add_space_prefix"), Some(Value::Bool(false)));
        crate::sentencepiece::write(&crate::sentencepiece::SpModel { pieces, add_dummy_prefix })
    }
}

/// JSON with two-space indentation and a final newline.
fn pretty(value: &Json) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map_or_else(Vec::new, |a| {
        a.iter().map(|s| s.as_str().unwrap_or_default().to_owned()).collect()
    })
}

fn usize_of(config: &Map<String, Json>, key: &str) -> usize {
    config.get(key).and_then(Json::as_u64).unwrap_or(1) as usize
}

/// A float metadata value as JSON, printed at `f32` precision (`1e-5`, not
/// `9.999999747378752e-6`).
fn float_json(v: f64) -> Json {
    let short: f64 = (v as f32).to_string().parse().unwrap_or(v);
    json!(short)
}

/// `config.json` for the model in a GGUF's metadata (`parts`: every part, for tensors).
fn hf_config(file: &GgufFile, parts: &[GgufFile]) -> Result<Map<String, Json>> {
    let h = &file.header;
    let find = |name: &str| parts.iter().find_map(|p| p.header.tensor(name));
    let get = |key: &str| -> Result<u64> {
        h.get(&format!("llama.{key}")).and_then(Value::as_u64).ok_or_else(|| {
            GgufError::Convert(format!("{} has no llama.{key}", file.path().display()))
        })
    };
    let n_embd = get("embedding_length")?;
    let n_head = get("attention.head_count")?;
    let vocab = find("token_embd.weight")
        .map(|t| t.dims[1])
        .or_else(|| h.get("llama.vocab_size").and_then(Value::as_u64))
        .unwrap_or(0);
    let mut config = json!({
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": false,
        "hidden_act": "silu",
        "hidden_size": n_embd,
        "intermediate_size": get("feed_forward_length")?,
        "max_position_embeddings": get("context_length")?,
        "mlp_bias": false,
        "model_type": "llama",
        "num_attention_heads": n_head,
        "num_hidden_layers": get("block_count")?,
        "num_key_value_heads": get("attention.head_count_kv").unwrap_or(n_head),
        "rms_norm_eps": float_json(h.get("llama.attention.layer_norm_rms_epsilon").and_then(Value::as_f64).unwrap_or(1e-5)),
        "rope_theta": float_json(h.get("llama.rope.freq_base").and_then(Value::as_f64).unwrap_or(10_000.0)),
        "tie_word_embeddings": find("output.weight").is_none(),
        "torch_dtype": "float32",
        "vocab_size": vocab,
    });
    if let Some(hd) = h.get("llama.attention.key_length").and_then(Value::as_u64)
        && hd != n_embd / n_head.max(1)
    {
        config["head_dim"] = json!(hd);
    }
    for (hf, key) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ] {
        if let Some(v) = h.get(key).and_then(Value::as_u64) {
            config[hf] = json!(v);
        }
    }
    if let Some(kind) =
        h.get("llama.rope.scaling.type").and_then(Value::as_str).filter(|k| *k != "none")
    {
        let factor = h.get("llama.rope.scaling.factor").and_then(Value::as_f64).unwrap_or(1.0);
        config["rope_scaling"] = json!({"rope_type": kind, "factor": float_json(factor)});
    }
    match config {
        Json::Object(map) => Ok(map),
        _ => unreachable!("built as an object"),
    }
}
