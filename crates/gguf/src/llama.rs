//! The `llama.*` and `general.*` metadata of a Llama-family model, from its Hugging Face
//! `config.json`, with the exact value types llama.cpp checks (u32 integers, f32 floats),
//! and the `rope_freqs` factors of Llama 3.1-style RoPE scaling.

use serde_json::{Map, Value as Json};

use crate::error::{GgufError, Result};
use crate::mixture::FileType;
use crate::value::Value;

/// The hyperparameters GGUF needs.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaParams {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// `head_dim` when the config gives one explicitly.
    pub head_dim: Option<usize>,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub vocab_size: usize,
    pub tied: bool,
    /// `rope_scaling` (or transformers 5's `rope_parameters`) when it scales.
    pub rope_scaling: Option<Map<String, Json>>,
}

impl LlamaParams {
    /// Reads the parameters from `config.json`.
    pub fn from_config(config: &Map<String, Json>) -> Result<LlamaParams> {
        let int = |key: &str| -> Result<usize> {
            config.get(key).and_then(Json::as_u64).map(|v| v as usize).ok_or_else(|| {
                GgufError::Convert(format!("config.json has no integer `{key}`, which GGUF needs"))
            })
        };
        let n_head = int("num_attention_heads")?;
        let rope = config.get("rope_parameters").and_then(Json::as_object);
        let rope_theta = config
            .get("rope_theta")
            .or_else(|| rope.and_then(|r| r.get("rope_theta")))
            .and_then(Json::as_f64)
            .unwrap_or(10_000.0) as f32;
        let scaling = config
            .get("rope_scaling")
            .and_then(Json::as_object)
            .or(rope)
            .filter(|r| {
                r.get("rope_type")
                    .or_else(|| r.get("type"))
                    .and_then(Json::as_str)
                    .is_some_and(|t| t != "default")
            })
            .cloned();
        Ok(LlamaParams {
            n_layer: int("num_hidden_layers")?,
            n_embd: int("hidden_size")?,
            n_ff: int("intermediate_size")?,
            n_head,
            n_head_kv: int("num_key_value_heads").unwrap_or(n_head),
            head_dim: config.get("head_dim").and_then(Json::as_u64).map(|v| v as usize),
            context_length: int("max_position_embeddings")?,
            rope_theta,
            rms_eps: config.get("rms_norm_eps").and_then(Json::as_f64).unwrap_or(1e-5) as f32,
            vocab_size: int("vocab_size")?,
            tied: config.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false),
            rope_scaling: scaling,
        })
    }

    /// The per-head size.
    pub fn head_size(&self) -> usize {
        self.head_dim.unwrap_or(self.n_embd / self.n_head.max(1))
    }

    /// The scaling type (`linear`, `yarn`, `llama3`), if any.
    fn scaling_type(&self) -> Option<&str> {
        let s = self.rope_scaling.as_ref()?;
        s.get("rope_type").or_else(|| s.get("type")).and_then(Json::as_str)
    }

    fn scaling_f32(&self, key: &str) -> Option<f32> {
        self.rope_scaling.as_ref()?.get(key)?.as_f64().map(|v| v as f32)
    }

    /// `general.*` and `llama.*` metadata for a file of this mixture.
    pub fn metadata(&self, name: &str, ftype: FileType) -> Vec<(String, Value)> {
        let u32v = |v: usize| Value::U32(v as u32);
        let mut out = vec![
            ("general.architecture".to_owned(), Value::String("llama".into())),
            ("general.type".to_owned(), Value::String("model".into())),
            ("general.name".to_owned(), Value::String(name.into())),
            ("llama.block_count".to_owned(), u32v(self.n_layer)),
            ("llama.context_length".to_owned(), u32v(self.context_length)),
            ("llama.embedding_length".to_owned(), u32v(self.n_embd)),
            ("llama.feed_forward_length".to_owned(), u32v(self.n_ff)),
            ("llama.attention.head_count".to_owned(), u32v(self.n_head)),
            ("llama.attention.head_count_kv".to_owned(), u32v(self.n_head_kv)),
            ("llama.rope.freq_base".to_owned(), Value::F32(self.rope_theta)),
            ("llama.attention.layer_norm_rms_epsilon".to_owned(), Value::F32(self.rms_eps)),
        ];
        if let Some(hd) = self.head_dim {
            out.push(("llama.attention.key_length".to_owned(), u32v(hd)));
            out.push(("llama.attention.value_length".to_owned(), u32v(hd)));
        }
        out.push(("general.file_type".to_owned(), Value::U32(ftype.id())));
        out.push(("llama.vocab_size".to_owned(), u32v(self.vocab_size)));
        out.push(("llama.rope.dimension_count".to_owned(), u32v(self.head_size())));
        if let Some(kind @ ("linear" | "yarn")) = self.scaling_type() {
            out.push(("llama.rope.scaling.type".to_owned(), Value::String(kind.into())));
            if let Some(f) = self.scaling_f32("factor") {
                out.push(("llama.rope.scaling.factor".to_owned(), Value::F32(f)));
            }
            if let Some(n) = self.scaling_f32("original_max_position_embeddings") {
                out.push((
                    "llama.rope.scaling.original_context_length".to_owned(),
                    Value::U32(n as u32),
                ));
            }
        }
        out.push(("general.quantization_version".to_owned(), Value::U32(2)));
        out
    }

    /// Llama 3.1-style ("llama3") RoPE: the per-frequency factors llama.cpp divides the
    /// rotary frequencies by, stored as the `rope_freqs.weight` tensor.
    pub fn rope_freqs(&self) -> Option<Vec<f32>> {
        if self.scaling_type() != Some("llama3") {
            return None;
        }
        // As llama.cpp's converter: frequencies in f32 (torch), the rest in Python floats.
        let get = |key: &str, default: f64| {
            self.rope_scaling
                .as_ref()
                .and_then(|s| s.get(key))
                .and_then(Json::as_f64)
                .unwrap_or(default)
        };
        let factor = get("factor", 8.0);
        let (low, high) = (get("low_freq_factor", 1.0), get("high_freq_factor", 4.0));
        let old_ctx = get("original_max_position_embeddings", 8192.0);
        let (low_wl, high_wl) = (old_ctx / low, old_ctx / high);
        let dim = self.head_size();
        let factors = (0..dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / dim as f32;
                let freq = 1.0 / self.rope_theta.powf(exponent);
                let wl = 2.0 * std::f64::consts::PI / f64::from(freq);
                let value = if wl < high_wl {
                    1.0
                } else if wl > low_wl {
                    factor
                } else {
                    let smooth = (old_ctx / wl - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                value as f32
            })
            .collect();
        Some(factors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(config: Json) -> LlamaParams {
        LlamaParams::from_config(config.as_object().unwrap()).unwrap()
    }

    fn base() -> Json {
        json!({"num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
               "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
               "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "vocab_size": 49152, "tie_word_embeddings": true})
    }

    #[test]
    fn smollm2_metadata_has_llama_cpp_types() {
        let p = params(base());
        assert_eq!(p.head_size(), 64);
        let meta = p.metadata("SmolLM2", FileType::Q4_1);
        let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("llama.block_count"), Value::U32(30));
        assert_eq!(get("llama.rope.freq_base"), Value::F32(100000.0));
        assert_eq!(get("llama.rope.dimension_count"), Value::U32(64));
        assert_eq!(get("general.file_type"), Value::U32(3));
        assert!(meta.iter().all(|(k, _)| k != "llama.attention.key_length"));
        assert!(p.rope_freqs().is_none());
    }

    #[test]
    fn transformers_5_rope_parameters_and_llama3_scaling() {
        let mut c = base();
        c.as_object_mut().unwrap().remove("rope_theta");
        c["rope_parameters"] = json!({"rope_theta": 500000.0, "rope_type": "default"});
        assert_eq!(params(c.clone()).rope_theta, 500000.0);
        assert!(params(c.clone()).rope_scaling.is_none());
        c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let freqs = params(c).rope_freqs().unwrap();
        assert_eq!(freqs.len(), 32);
        assert_eq!(freqs[0], 1.0, "high frequencies are not scaled");
        assert_eq!(freqs[31], 8.0, "low frequencies are scaled by the factor");
    }

    #[test]
    fn missing_keys_are_named() {
        let err =
            LlamaParams::from_config(json!({"hidden_size": 8}).as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
    }
}
