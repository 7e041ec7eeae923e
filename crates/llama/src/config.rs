//! The model's shape and settings, read from a Hugging Face `config.json` (a GGUF's
//! metadata arrives as one too): layer sizes, heads, RoPE and its scaling, sliding
//! windows per layer, and which of llama / mistral / qwen2 / qwen3 it is.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// More layers than any model has (the largest have a few hundred).
const MAX_LAYERS: usize = 1 << 16;
/// The decoder families the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    /// Q/K/V biases.
    Qwen2,
    /// Per-head RMSNorm of Q and K.
    Qwen3,
}

impl Arch {
    /// The `model_type`s the engine runs, for error messages.
    pub const SUPPORTED: &'static str = "llama, mistral, qwen2, qwen3";

    fn from_model_type(model_type: &str) -> Option<Arch> {
        match model_type {
            "llama" => Some(Arch::Llama),
            "mistral" => Some(Arch::Mistral),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            _ => None,
        }
    }

    /// The `model_type` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
}

/// RoPE frequency scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.1's per-frequency blend.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: f32,
    },
}

/// Everything the forward pass needs to know about the model's shape.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    /// The context the model was trained for.
    pub max_positions: usize,
    pub tie_embeddings: bool,
    /// Per layer: the sliding attention window, if the layer has one.
    pub windows: Vec<Option<usize>>,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
}

impl Config {
    /// Reads a `config.json` object.
    pub fn from_hf(map: &Map<String, Value>) -> Result<Config> {
        let model_type = map.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = Arch::from_model_type(model_type).ok_or_else(|| {
            Error::Config(format!(
                "model_type {model_type:?} is not an architecture the engine runs (it runs {})",
                Arch::SUPPORTED
            ))
        })?;
        let hidden = need(map, "hidden_size")?;
        let heads = need(map, "num_attention_heads")?;
        let layers = need(map, "num_hidden_layers")?;
        // Per-layer settings are sized by this count before any weight is looked up.
        if layers > MAX_LAYERS {
            return Err(Error::Config(format!(
                "num_hidden_layers is {layers}; no model has more than {MAX_LAYERS} layers"
            )));
        }
        let kv_heads = opt(map, "num_key_value_heads")?.unwrap_or(heads);
        let head_dim = match opt(map, "head_dim")? {
            Some(d) => d,
            None => hidden.checked_div(heads).unwrap_or(0),
        };
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(Error::Config(format!(
                "num_attention_heads ({heads}) must be a positive multiple of \
                 num_key_value_heads ({kv_heads})"
            )));
        }
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::Config(format!("head_dim {head_dim} must be even and positive")));
        }
        let rope = map.get("rope_parameters").and_then(Value::as_object);
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| map.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0) as f32;
        let scaling = rope.or_else(|| map.get("rope_scaling").and_then(Value::as_object));
        let max_positions = opt(map, "max_position_embeddings")?.unwrap_or(2048);
        Ok(Config {
            arch,
            hidden,
            intermediate: need(map, "intermediate_size")?,
            layers,
            heads,
            kv_heads,
            head_dim,
            vocab: need(map, "vocab_size")?,
            rms_eps: map.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6) as f32,
            rope_theta,
            rope_scaling: rope_scaling(scaling)?,
            max_positions,
            tie_embeddings: map.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(
                // transformers' default differs by family; llama/mistral/qwen default to
                // untied, and a missing lm_head is treated as tied when loading anyway.
                false,
            ),
            windows: windows(map, arch, layers)?,
            bos: map.get("bos_token_id").and_then(Value::as_u64).map(|v| v as u32),
            eos: ids(map.get("eos_token_id")),
        })
    }

    /// Rows of the K (and V) projection: `kv_heads · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Rows of the Q projection: `heads · head_dim`.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Token ids given as a number or a list of numbers.
pub fn ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|v| v as u32).collect(),
        _ => Vec::new(),
    }
}

fn opt(map: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|v| Some(v as usize)).ok_or_else(|| {
            Error::Config(format!("{key} must be a non-negative integer, found {v}"))
        }),
    }
}

fn need(map: &Map<String, Value>, key: &str) -> Result<usize> {
    opt(map, key)?.ok_or_else(|| Error::Config(format!("{key} is missing")))
}

fn rope_scaling(scaling: Option<&Map<String, Value>>) -> Result<RopeScaling> {
    let Some(s) = scaling else { return Ok(RopeScaling::None) };
    let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str);
    let num =
        |key: &str, default: f64| s.get(key).and_then(Value::as_f64).unwrap_or(default) as f32;
    match kind {
        None | Some("default") => Ok(RopeScaling::None),
        Some("linear") => Ok(RopeScaling::Linear { factor: num("factor", 1.0) }),
        Some("llama3") => Ok(RopeScaling::Llama3 {
            factor: num("factor", 8.0),
            low_freq_factor: num("low_freq_factor", 1.0),
            high_freq_factor: num("high_freq_factor", 4.0),
            original_context: num("original_max_position_embeddings", 8192.0),
        }),
        Some(other) => Err(Error::Config(format!(
            "rope scaling {other:?} is not supported (the engine runs default, linear and llama3)"
        ))),
    }
}

/// The sliding window of each layer: `layer_types` where given; otherwise mistral's
/// `sliding_window` on every layer, and qwen's on layers from `max_window_layers` on when
/// `use_sliding_window` is set.
fn windows(map: &Map<String, Value>, arch: Arch, layers: usize) -> Result<Vec<Option<usize>>> {
    let window = opt(map, "sliding_window")?;
    if let Some(types) = map.get("layer_types").and_then(Value::as_array) {
        if types.len() != layers {
            return Err(Error::Config(format!(
                "layer_types has {} entries for {layers} layers",
                types.len()
            )));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(None),
                Some("sliding_attention") => window.map(Some).ok_or_else(|| {
                    Error::Config(
                        "layer_types names sliding_attention but sliding_window is not set".into(),
                    )
                }),
                _ => Err(Error::Config(format!("layer_types entry {t} is not known"))),
            })
            .collect();
    }
    let all = |w: Option<usize>| vec![w; layers];
    Ok(match arch {
        Arch::Mistral => all(window),
        Arch::Qwen2 | Arch::Qwen3 => {
            let on = map.get("use_sliding_window").and_then(Value::as_bool).unwrap_or(false);
            let from = opt(map, "max_window_layers")?.unwrap_or(layers);
            (0..layers).map(|i| window.filter(|_| on && i >= from)).collect()
        }
        Arch::Llama => all(None),
    })
}
