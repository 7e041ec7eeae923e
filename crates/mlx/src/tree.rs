//! mlx_lm's module trees (`docs/mlx-format.md` §4): for each model class amalgam writes,
//! the order of a decoder layer's parameters (mlx_lm saves in module-tree order, and that
//! order decides shards and, through the hash map mlx fills, each file's data order),
//! and whether the output layer is the embeddings.

use serde_json::{Map, Value};

use crate::error::{MlxError, Result};

/// The runs of parameters a decoder layer is made of, shared among the classes.
const ATTENTION: &[&str] = &[
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
];
/// qwen2's attention: each of q, k and v with a bias after its weight.
const ATTENTION_BIASED: &[&str] = &[
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
];
const QK_NORMS: &[&str] = &["self_attn.q_norm.weight", "self_attn.k_norm.weight"];
const MLP: &[&str] = &["mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight"];
const NORMS: &[&str] = &["input_layernorm.weight", "post_attention_layernorm.weight"];
const FF_NORMS: &[&str] =
    &["pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"];

/// How a class decides that the output layer is the embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tie {
    /// `tie_word_embeddings`, this when the config has none.
    Default(bool),
    /// `tie_word_embeddings`, which the config must have.
    Required,
    /// Always: the class has no `lm_head`.
    Always,
    /// When the weights have no `lm_head.weight` (gemma3_text).
    WithoutHead,
}

/// One model class's tree.
#[derive(Clone, Copy, Debug)]
pub struct Tree {
    /// The class's module name in mlx_lm (`model_type`; mistral is llama's).
    pub class: &'static str,
    /// A decoder layer's parameters in order, as runs.
    layer: &'static [&'static [&'static str]],
    tie: Tie,
}

const LLAMA: &[&[&str]] = &[ATTENTION, MLP, NORMS];
const QWEN2: &[&[&str]] = &[ATTENTION_BIASED, MLP, NORMS];
const QWEN3: &[&[&str]] = &[ATTENTION, QK_NORMS, MLP, NORMS];
const GEMMA2: &[&[&str]] = &[ATTENTION, MLP, &[NORMS[0]], FF_NORMS, &[NORMS[1]]];
const GEMMA3: &[&[&str]] = &[ATTENTION, QK_NORMS, MLP, NORMS, FF_NORMS];
const PHI3: &[&[&str]] =
    &[&["self_attn.qkv_proj.weight", ATTENTION[3], "mlp.gate_up_proj.weight", MLP[1]], NORMS];

/// The classes, by `model_type`.
const TREES: [(&str, Tree); 8] = [
    ("llama", Tree { class: "llama", layer: LLAMA, tie: Tie::Default(true) }),
    ("mistral", Tree { class: "llama", layer: LLAMA, tie: Tie::Default(true) }),
    ("qwen2", Tree { class: "qwen2", layer: QWEN2, tie: Tie::Default(true) }),
    ("qwen3", Tree { class: "qwen3", layer: QWEN3, tie: Tie::Required }),
    ("gemma", Tree { class: "gemma", layer: LLAMA, tie: Tie::Always }),
    ("gemma2", Tree { class: "gemma2", layer: GEMMA2, tie: Tie::Always }),
    ("gemma3_text", Tree { class: "gemma3_text", layer: GEMMA3, tie: Tie::WithoutHead }),
    ("phi3", Tree { class: "phi3", layer: PHI3, tie: Tie::Default(false) }),
];

impl Tree {
    /// The tree of the model `config` describes.
    pub fn of(config: &Map<String, Value>) -> Result<Tree> {
        let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
        TREES
            .iter()
            .find(|(t, _)| *t == model_type)
            .map(|(_, tree)| *tree)
            .ok_or_else(|| MlxError::Architecture(model_type.to_owned()))
    }

    /// Whether the output layer is the embeddings, for a model with `config` whose
    /// weights have an `lm_head.weight` or not.
    pub fn tied(&self, config: &Map<String, Value>, has_head: bool) -> Result<bool> {
        let key = config.get("tie_word_embeddings").and_then(Value::as_bool);
        let tied = match self.tie {
            Tie::Default(default) => key.unwrap_or(default),
            Tie::Required => {
                key.ok_or(MlxError::MissingKey { key: "tie_word_embeddings", class: self.class })?
            }
            Tie::Always if has_head => {
                return Err(MlxError::Tensor { name: "lm_head.weight".into(), class: self.class });
            }
            Tie::Always => true,
            Tie::WithoutHead => !has_head,
        };
        if !tied && !has_head {
            return Err(MlxError::NoHead(self.class));
        }
        Ok(tied)
    }

    /// Where the class puts a stored tensor: (part, layer, index) with the embeddings,
    /// the layers, the final norm and the output layer as parts 0 to 3; `None` for those
    /// it drops (precomputed rotary frequencies, a tied output layer).
    pub fn position(&self, name: &str, tied: bool) -> Result<Option<(usize, usize, usize)>> {
        if name.ends_with("rotary_emb.inv_freq") || (tied && name == "lm_head.weight") {
            return Ok(None);
        }
        let found = match name {
            "model.embed_tokens.weight" => Some((0, 0, 0)),
            "model.norm.weight" => Some((2, 0, 0)),
            "lm_head.weight" => Some((3, 0, 0)),
            _ => name.strip_prefix("model.layers.").and_then(|rest| {
                let (i, rest) = rest.split_once('.')?;
                Some((
                    1,
                    i.parse().ok()?,
                    self.layer.iter().copied().flatten().position(|l| *l == rest)?,
                ))
            }),
        };
        let unknown = || MlxError::Tensor { name: name.to_owned(), class: self.class };
        found.map(Some).ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn each_class_ties_as_mlx_lm_does() {
        let tree = |t: &str| Tree::of(&config(json!({"model_type": t}))).unwrap();
        let untold = config(json!({}));
        assert!(tree("llama").tied(&untold, true).unwrap());
        assert!(matches!(tree("phi3").tied(&untold, false), Err(MlxError::NoHead("phi3"))));
        assert!(!tree("phi3").tied(&untold, true).unwrap());
        assert!(!tree("qwen2").tied(&config(json!({"tie_word_embeddings": false})), true).unwrap());
        assert!(matches!(
            tree("qwen3").tied(&untold, true),
            Err(MlxError::MissingKey { key: "tie_word_embeddings", class: "qwen3" })
        ));
        assert!(tree("gemma").tied(&untold, false).unwrap());
        assert!(matches!(tree("gemma2").tied(&untold, true), Err(MlxError::Tensor { .. })));
        assert!(tree("gemma3_text").tied(&untold, false).unwrap());
        assert!(!tree("gemma3_text").tied(&untold, true).unwrap());
        let err = Tree::of(&config(json!({"model_type": "falcon"}))).unwrap_err();
        assert!(err.to_string().contains("not \"falcon\""), "{err}");
    }

    #[test]
    fn a_bias_follows_its_weight_and_unknown_names_are_errors() {
        let qwen2 = Tree::of(&config(json!({"model_type": "qwen2"}))).unwrap();
        let at = |n: &str| qwen2.position(n, false).unwrap();
        assert!(
            at("model.layers.1.self_attn.q_proj.weight")
                < at("model.layers.1.self_attn.q_proj.bias")
        );
        assert!(
            at("model.layers.1.self_attn.q_proj.bias")
                < at("model.layers.1.self_attn.k_proj.weight")
        );
        assert!(
            at("model.layers.0.post_attention_layernorm.weight")
                < at("model.layers.1.self_attn.q_proj.weight")
        );
        assert_eq!(qwen2.position("lm_head.weight", true).unwrap(), None);
        let err = qwen2.position("model.layers.0.self_attn.q_norm.weight", false).unwrap_err();
        assert!(err.to_string().contains("mlx_lm's qwen2 class"), "{err}");
    }
}
