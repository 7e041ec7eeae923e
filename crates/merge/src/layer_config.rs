//! Per-layer config settings carried through a merge that changes the layers: lists with
//! one entry per layer (`layer_types` and the like) are rebuilt through the same layer
//! mapping as the weights, and scalar layer thresholds (`max_window_layers`) are
//! re-counted. mergekit leaves both at the source's values, which describes another
//! model than the one written.

use serde_json::{Map, Value, json};

use crate::arch::{Architecture, LayerTypes};

const SLIDING: &str = "sliding_attention";
const FULL: &str = "full_attention";

/// Rewrites `config` (the donor's, with `source_layers` layers) for output layers taken
/// from source layers `origins`; returns a note for each setting it changed.
pub fn map_layers(
    config: &mut Map<String, Value>,
    arch: &Architecture,
    source_layers: usize,
    origins: &[usize],
) -> Vec<String> {
    let mut notes = Vec::new();
    let listed = config.get("layer_types").is_some();
    if let Some(types) = layer_types(config, arch.layer_types, source_layers) {
        let mapped: Vec<&str> = origins.iter().map(|&o| types.get(o).map_or(FULL, |t| t)).collect();
        if listed || mapped.iter().any(|t| *t != mapped[0]) {
            let sliding = mapped.iter().filter(|t| **t == SLIDING).count();
            notes.push(format!(
                "layer_types {} for the {} output layers ({sliding} sliding-window, {} full \
                 attention), each layer keeping its source layer's attention type",
                if listed { "rebuilt" } else { "written out" },
                mapped.len(),
                mapped.len() - sliding
            ));
            config.insert("layer_types".into(), json!(mapped));
        }
    }
    for (key, value) in config.iter_mut() {
        if key == "layer_types" || !key.contains("layer") {
            continue;
        }
        if let Some(list) = value.as_array().filter(|l| l.len() == source_layers) {
            let mapped: Vec<Value> =
                origins.iter().map(|&o| list.get(o).cloned().unwrap_or(Value::Null)).collect();
            *value = Value::Array(mapped);
            notes.push(format!("{key} rebuilt per output layer from its source layers"));
        }
    }
    let threshold = config.get("max_window_layers").and_then(Value::as_u64);
    if let Some(threshold) = threshold.filter(|_| arch.layer_types == LayerTypes::MaxWindowLayers) {
        let below = origins.iter().take_while(|&&o| (o as u64) < threshold).count();
        if below as u64 != threshold {
            config.insert("max_window_layers".into(), json!(below));
            notes.push(format!(
                "max_window_layers {threshold} → {below}: the output layers before it are the \
                 leading ones taken from source layers below {threshold}"
            ));
        }
    }
    notes
}

/// The source's attention type per layer: its `layer_types`, else what transformers
/// derives from the other settings; `None` when all layers attend alike.
fn layer_types(
    config: &Map<String, Value>,
    rule: LayerTypes,
    layers: usize,
) -> Option<Vec<&'static str>> {
    if let Some(list) = config.get("layer_types").and_then(Value::as_array) {
        let types = list.iter().map(|t| if t.as_str() == Some(SLIDING) { SLIDING } else { FULL });
        return Some(types.collect());
    }
    let kind = |sliding: bool| if sliding { SLIDING } else { FULL };
    let number =
        |key: &str, default: u64| config.get(key).and_then(Value::as_u64).unwrap_or(default);
    match rule {
        LayerTypes::Uniform => None,
        LayerTypes::MaxWindowLayers => {
            let windowed = config.get("use_sliding_window").and_then(Value::as_bool) == Some(true)
                && config.get("sliding_window").is_some_and(|w| !w.is_null());
            let first = number("max_window_layers", 28) as usize;
            Some((0..layers).map(|i| kind(windowed && i >= first)).collect())
        }
        LayerTypes::Alternating => Some((0..layers).map(|i| kind(i % 2 == 0)).collect()),
        LayerTypes::Pattern => {
            let period = number("sliding_window_pattern", 6).max(1) as usize;
            Some((0..layers).map(|i| kind((i + 1) % period != 0)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ARCHITECTURES;

    fn arch(model_type: &str) -> &'static Architecture {
        ARCHITECTURES.iter().find(|a| a.model_type == model_type).unwrap()
    }

    fn config(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn gemma2_alternation_follows_the_layers() {
        let mut c = config(json!({"num_hidden_layers": 4}));
        // Layers 1, 2 then 2, 3: full, sliding, sliding, full.
        let notes = map_layers(&mut c, arch("gemma2"), 4, &[1, 2, 2, 3]);
        assert_eq!(c["layer_types"], json!([FULL, SLIDING, SLIDING, FULL]));
        assert!(notes[0].contains("written out for the 4 output layers (2 sliding-window"));
    }

    #[test]
    fn gemma3_pattern_and_explicit_lists() {
        let mut c = config(json!({"sliding_window_pattern": 2}));
        map_layers(&mut c, arch("gemma3_text"), 4, &[0, 1, 1]);
        assert_eq!(c["layer_types"], json!([SLIDING, FULL, FULL]));

        let mut c =
            config(json!({"layer_types": [FULL, SLIDING, FULL], "no_rope_layers": [1, 0, 1]}));
        let notes = map_layers(&mut c, arch("llama"), 3, &[1, 1, 2, 0]);
        assert_eq!(c["layer_types"], json!([SLIDING, SLIDING, FULL, FULL]));
        assert_eq!(c["no_rope_layers"], json!([0, 0, 1, 1]));
        assert_eq!(notes.len(), 2);
    }

    #[test]
    fn qwen_window_threshold_is_recounted() {
        let mut c = config(
            json!({"use_sliding_window": true, "sliding_window": 4096, "max_window_layers": 2}),
        );
        let notes = map_layers(&mut c, arch("qwen2"), 4, &[0, 1, 0, 1, 2, 3]);
        assert_eq!(c["layer_types"], json!([FULL, FULL, FULL, FULL, SLIDING, SLIDING]));
        assert_eq!(c["max_window_layers"], json!(4));
        assert!(notes.iter().any(|n| n.starts_with("max_window_layers 2 → 4")));

        // Without use_sliding_window every layer is full attention: no list to write, but
        // the threshold still counts the 38 layers that come from below it.
        let mut c = config(json!({"use_sliding_window": false, "max_window_layers": 28}));
        let origins: Vec<usize> = (0..28).chain(10..20).collect();
        let notes = map_layers(&mut c, arch("qwen3"), 28, &origins);
        assert!(c.get("layer_types").is_none());
        assert_eq!(c["max_window_layers"], json!(38));
        assert_eq!(notes.len(), 1, "{notes:?}");
    }
}
