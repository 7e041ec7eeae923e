//! Architectures as data: which tensors come before the layers, in each layer and after
//! them, which are optional or tied, and which config key counts the layers. The tables
//! are our own, written from the Hugging Face checkpoint layouts.

use serde_json::{Map, Value};

/// One weight of an architecture. `{layer}` in a name stands for the layer index.
#[derive(Debug)]
pub struct WeightDef {
    pub name: &'static str,
    /// Whether the weight may be absent (a tied `lm_head`).
    pub optional: bool,
    /// Other names that satisfy a read, tried in order (a tied embedding).
    pub tied_names: &'static [&'static str],
    /// The axis indexed by token id, for weights shaped by the vocabulary.
    pub vocab_axis: Option<usize>,
}

/// The tensor layout of a decoder-only architecture.
#[derive(Debug)]
pub struct Architecture {
    pub model_type: &'static str,
    /// The `architectures` class names in `config.json` this table matches.
    pub classes: &'static [&'static str],
    pub pre_weights: &'static [WeightDef],
    pub layer_weights: &'static [WeightDef],
    pub post_weights: &'static [WeightDef],
    /// The config key holding the layer count (a dotted path for nested configs).
    pub num_layers_key: &'static str,
    /// How the model's attention type per layer follows from its config when
    /// `layer_types` is absent.
    pub layer_types: LayerTypes,
}

/// The rule transformers uses to derive `layer_types` (sliding or full attention per
/// layer) for configs that do not list them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerTypes {
    /// Every layer attends the same way; nothing to derive.
    Uniform,
    /// Qwen2/Qwen3: sliding from layer `max_window_layers` on, when `use_sliding_window`.
    MaxWindowLayers,
    /// Gemma 2: sliding on even layers, full on odd ones.
    Alternating,
    /// Gemma 3: full on every `sliding_window_pattern`-th layer (default 6), else sliding.
    Pattern,
}

const fn weight(name: &'static str) -> WeightDef {
    WeightDef { name, optional: false, tied_names: &[], vocab_axis: None }
}

const EMBED: WeightDef = WeightDef {
    name: "model.embed_tokens.weight",
    optional: false,
    tied_names: &[],
    vocab_axis: Some(0),
};

const LM_HEAD: WeightDef = WeightDef {
    name: "lm_head.weight",
    optional: true,
    tied_names: &["model.embed_tokens.weight"],
    vocab_axis: Some(0),
};

const fn optional(name: &'static str) -> WeightDef {
    WeightDef { name, optional: true, tied_names: &[], vocab_axis: None }
}

const NORM: WeightDef = weight("model.norm.weight");

/// The nine weights of a Llama-style decoder layer (Mistral shares them).
const LLAMA_LAYER: &[WeightDef] = &[
    weight("model.layers.{layer}.input_layernorm.weight"),
    weight("model.layers.{layer}.self_attn.q_proj.weight"),
    weight("model.layers.{layer}.self_attn.k_proj.weight"),
    weight("model.layers.{layer}.self_attn.v_proj.weight"),
    weight("model.layers.{layer}.self_attn.o_proj.weight"),
    weight("model.layers.{layer}.post_attention_layernorm.weight"),
    weight("model.layers.{layer}.mlp.up_proj.weight"),
    weight("model.layers.{layer}.mlp.gate_proj.weight"),
    weight("model.layers.{layer}.mlp.down_proj.weight"),
];

/// Qwen2: Llama's layer with biases on the q, k and v projections.
const QWEN2_LAYER: &[WeightDef] = &[
    weight("model.layers.{layer}.input_layernorm.weight"),
    weight("model.layers.{layer}.mlp.down_proj.weight"),
    weight("model.layers.{layer}.mlp.gate_proj.weight"),
    weight("model.layers.{layer}.mlp.up_proj.weight"),
    weight("model.layers.{layer}.post_attention_layernorm.weight"),
    weight("model.layers.{layer}.self_attn.k_proj.bias"),
    weight("model.layers.{layer}.self_attn.k_proj.weight"),
    weight("model.layers.{layer}.self_attn.o_proj.weight"),
    weight("model.layers.{layer}.self_attn.q_proj.bias"),
    weight("model.layers.{layer}.self_attn.q_proj.weight"),
    weight("model.layers.{layer}.self_attn.v_proj.bias"),
    weight("model.layers.{layer}.self_attn.v_proj.weight"),
];

/// Qwen3: per-head RMS norms on queries and keys; projection biases only with
/// `attention_bias`.
const QWEN3_LAYER: &[WeightDef] = &[
    weight("model.layers.{layer}.input_layernorm.weight"),
    weight("model.layers.{layer}.mlp.down_proj.weight"),
    weight("model.layers.{layer}.mlp.gate_proj.weight"),
    weight("model.layers.{layer}.mlp.up_proj.weight"),
    weight("model.layers.{layer}.post_attention_layernorm.weight"),
    weight("model.layers.{layer}.self_attn.k_norm.weight"),
    weight("model.layers.{layer}.self_attn.k_proj.weight"),
    weight("model.layers.{layer}.self_attn.q_norm.weight"),
    weight("model.layers.{layer}.self_attn.q_proj.weight"),
    weight("model.layers.{layer}.self_attn.v_proj.weight"),
    weight("model.layers.{layer}.self_attn.o_proj.weight"),
    optional("model.layers.{layer}.self_attn.q_proj.bias"),
    optional("model.layers.{layer}.self_attn.k_proj.bias"),
    optional("model.layers.{layer}.self_attn.v_proj.bias"),
    optional("model.layers.{layer}.self_attn.o_proj.bias"),
];

/// Gemma 2: sandwich norms around the attention and the MLP.
const GEMMA2_LAYER: &[WeightDef] = &[
    weight("model.layers.{layer}.input_layernorm.weight"),
    weight("model.layers.{layer}.self_attn.q_proj.weight"),
    weight("model.layers.{layer}.self_attn.k_proj.weight"),
    weight("model.layers.{layer}.self_attn.v_proj.weight"),
    weight("model.layers.{layer}.self_attn.o_proj.weight"),
    weight("model.layers.{layer}.post_attention_layernorm.weight"),
    weight("model.layers.{layer}.pre_feedforward_layernorm.weight"),
    weight("model.layers.{layer}.mlp.up_proj.weight"),
    weight("model.layers.{layer}.mlp.gate_proj.weight"),
    weight("model.layers.{layer}.mlp.down_proj.weight"),
    weight("model.layers.{layer}.post_feedforward_layernorm.weight"),
];

/// Gemma 3 (text): Gemma 2's layer with query and key norms.
const GEMMA3_LAYER: &[WeightDef] = &[
    weight("model.layers.{layer}.input_layernorm.weight"),
    weight("model.layers.{layer}.self_attn.q_proj.weight"),
    weight("model.layers.{layer}.self_attn.q_norm.weight"),
    weight("model.layers.{layer}.self_attn.k_proj.weight"),
    weight("model.layers.{layer}.self_attn.k_norm.weight"),
    weight("model.layers.{layer}.self_attn.v_proj.weight"),
    weight("model.layers.{layer}.self_attn.o_proj.weight"),
    weight("model.layers.{layer}.post_attention_layernorm.weight"),
    weight("model.layers.{layer}.pre_feedforward_layernorm.weight"),
    weight("model.layers.{layer}.mlp.up_proj.weight"),
    weight("model.layers.{layer}.mlp.gate_proj.weight"),
    weight("model.layers.{layer}.mlp.down_proj.weight"),
    weight("model.layers.{layer}.post_feedforward_layernorm.weight"),
];

/// Phi-3: fused query-key-value and gate-up projections.
const PHI3_LAYER: &[WeightDef] = &[
    weight("model.layers.{layer}.input_layernorm.weight"),
    weight("model.layers.{layer}.post_attention_layernorm.weight"),
    weight("model.layers.{layer}.self_attn.o_proj.weight"),
    weight("model.layers.{layer}.self_attn.qkv_proj.weight"),
    weight("model.layers.{layer}.mlp.gate_up_proj.weight"),
    weight("model.layers.{layer}.mlp.down_proj.weight"),
];

/// A decoder-only architecture with the usual embedding, final norm and output head.
const fn decoder(
    model_type: &'static str,
    classes: &'static [&'static str],
    layer_weights: &'static [WeightDef],
    layer_types: LayerTypes,
) -> Architecture {
    Architecture {
        model_type,
        classes,
        pre_weights: &[EMBED],
        layer_weights,
        post_weights: &[NORM, LM_HEAD],
        num_layers_key: "num_hidden_layers",
        layer_types,
    }
}

/// Every architecture amalgam knows.
pub static ARCHITECTURES: &[Architecture] = &[
    decoder("llama", &["LlamaForCausalLM", "LLaMaForCausalLM"], LLAMA_LAYER, LayerTypes::Uniform),
    decoder("mistral", &["MistralForCausalLM"], LLAMA_LAYER, LayerTypes::Uniform),
    decoder("qwen2", &["Qwen2ForCausalLM"], QWEN2_LAYER, LayerTypes::MaxWindowLayers),
    decoder("qwen3", &["Qwen3ForCausalLM"], QWEN3_LAYER, LayerTypes::MaxWindowLayers),
    decoder("gemma", &["GemmaForCausalLM"], LLAMA_LAYER, LayerTypes::Uniform),
    decoder("gemma2", &["Gemma2ForCausalLM"], GEMMA2_LAYER, LayerTypes::Alternating),
    decoder("gemma3_text", &["Gemma3ForCausalLM"], GEMMA3_LAYER, LayerTypes::Pattern),
    Architecture {
        post_weights: &[WeightDef { optional: false, tied_names: &[], ..LM_HEAD }, NORM],
        ..decoder("phi3", &["Phi3ForCausalLM"], PHI3_LAYER, LayerTypes::Uniform)
    },
];

impl WeightDef {
    /// The name for layer `layer` (pre- and post-layer names have no placeholder).
    pub fn name_at(&self, layer: usize) -> String {
        self.name.replace("{layer}", &layer.to_string())
    }
}

impl Architecture {
    /// The table for a model's `config.json`: by its first `architectures` class,
    /// else by `model_type`.
    pub fn for_config(config: &Map<String, Value>) -> Option<&'static Architecture> {
        let class = config
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        if let Some(class) = class {
            return ARCHITECTURES.iter().find(|a| a.classes.contains(&class));
        }
        let model_type = config.get("model_type").and_then(Value::as_str)?;
        ARCHITECTURES.iter().find(|a| a.model_type == model_type)
    }

    /// The layer count a config gives, if the key is present and an integer.
    pub fn num_layers(&self, config: &Map<String, Value>) -> Option<usize> {
        lookup(config, self.num_layers_key)?.as_u64().map(|n| n as usize)
    }

    /// Every class name amalgam knows, for messages.
    pub fn known_classes() -> Vec<&'static str> {
        ARCHITECTURES.iter().flat_map(|a| a.classes.iter().copied()).collect()
    }
}

/// Looks up a dotted key (`text_config.num_hidden_layers`) in a JSON object.
pub fn lookup<'a>(config: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = config.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Sets a dotted key in a JSON object, keeping its position if it exists.
pub fn set(config: &mut Map<String, Value>, key: &str, new: Value) -> bool {
    match key.split_once('.') {
        None => {
            config.insert(key.to_owned(), new);
            true
        }
        Some((head, rest)) => match config.get_mut(head).and_then(Value::as_object_mut) {
            Some(inner) => set(inner, rest, new),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_by_class_and_expands_templates() {
        let config = json!({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 80});
        let arch = Architecture::for_config(config.as_object().unwrap()).unwrap();
        assert_eq!(arch.model_type, "llama");
        assert_eq!(arch.num_layers(config.as_object().unwrap()), Some(80));
        assert_eq!(arch.layer_weights[1].name_at(12), "model.layers.12.self_attn.q_proj.weight");
        let mistral = json!({"model_type": "mistral"});
        assert_eq!(
            Architecture::for_config(mistral.as_object().unwrap()).unwrap().model_type,
            "mistral"
        );
        let unknown = json!({"architectures": ["GPT2LMHeadModel"]});
        assert!(Architecture::for_config(unknown.as_object().unwrap()).is_none());
    }

    #[test]
    fn dotted_keys() {
        let mut config = json!({"text_config": {"num_hidden_layers": 4}, "a": 1});
        let map = config.as_object_mut().unwrap();
        assert!(set(map, "text_config.num_hidden_layers", json!(6)));
        assert_eq!(lookup(map, "text_config.num_hidden_layers"), Some(&json!(6)));
        assert!(!set(map, "missing.key", json!(1)));
    }
}
