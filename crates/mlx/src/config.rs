//! The `config.json` mlx_lm writes beside a converted model (`docs/mlx-format.md` §3): the
//! input's config, its `eos_token_id` replaced by `generation_config.json`'s when that one
//! is set, `quantization` and `quantization_config` added (the top-level group size, bits
//! and mode, then one entry per layer a recipe chose bits for), `_name_or_path` dropped,
//! the top-level keys sorted (nested objects keep their order).

use serde_json::{Map, Value};

/// How a model was quantized, as its config records it.
pub struct Quantization {
    pub group_size: usize,
    pub bits: u32,
    /// `affine`, `mxfp4`, `nvfp4` or `mxfp8`.
    pub mode: &'static str,
    /// Per layer a recipe chose for: module path, the group size given on the command
    /// line (`None` when it was not, written as `null`), bits (always affine).
    pub layers: Vec<(String, Option<usize>, u32)>,
}

fn entry(group_size: Option<usize>, bits: u32, mode: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("group_size".into(), group_size.map_or(Value::Null, Value::from));
    m.insert("bits".into(), bits.into());
    m.insert("mode".into(), mode.into());
    m
}

/// Python's truth value of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The config of the converted model: `quantization` `None` for a dequantized one.
pub fn converted(
    config: &Map<String, Value>,
    generation: Option<&Map<String, Value>>,
    quantization: Option<&Quantization>,
) -> Map<String, Value> {
    let mut out = config.clone();
    if let Some(eos) = generation.and_then(|g| g.get("eos_token_id")).filter(|v| truthy(v)) {
        out.insert("eos_token_id".into(), eos.clone());
    }
    out.remove("_name_or_path");
    out.remove("quantization");
    out.remove("quantization_config");
    if let Some(q) = quantization {
        let mut m = entry(Some(q.group_size), q.bits, q.mode);
        for (path, group_size, bits) in &q.layers {
            m.insert(path.clone(), Value::Object(entry(*group_size, *bits, "affine")));
        }
        out.insert("quantization".into(), Value::Object(m.clone()));
        out.insert("quantization_config".into(), Value::Object(m));
    }
    let mut keys: Vec<(String, Value)> = out.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys.into_iter().collect()
}
