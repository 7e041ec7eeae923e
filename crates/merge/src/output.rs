//! The files beside the weights: `config.json` edited in the donor's own key style, the
//! shard index, and the tokenizer and generation files copied from the donor.

use std::fs;
use std::path::Path;

use amalgam_tensors::DType;
use serde_json::{Map, Value, json};

use crate::arch::{self, Architecture};
use crate::error::{MergeError, Result};
use crate::source::Model;

/// Files copied with the tokenizer, as mergekit copies them (plus `vocab.json`, which
/// GPT-2-style tokenizers need and mergekit forgets).
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "generation_config.json",
    "chat_template.json",
    "video_preprocessor_config.json",
];

/// The output `config.json`: the donor's, with only the layer count (and the per-layer
/// settings that follow it; their notes are pushed to `notes`), vocabulary size and
/// dtype changed.
/// Keys keep their order and style: a config with `torch_dtype` keeps `torch_dtype`, one
/// with `dtype` keeps `dtype`.
pub fn output_config(
    donor: &Map<String, Value>,
    arch: &Architecture,
    layer_origins: Option<&[usize]>,
    vocab_size: Option<usize>,
    dtype: Option<DType>,
    notes: &mut Vec<String>,
) -> Map<String, Value> {
    let mut config = donor.clone();
    if let Some(origins) = layer_origins {
        if let Some(source_layers) = arch.num_layers(&config) {
            notes.extend(crate::layer_config::map_layers(
                &mut config,
                arch,
                source_layers,
                origins,
            ));
        }
        arch::set(&mut config, arch.num_layers_key, json!(origins.len()));
    }
    if let Some(vocab_size) = vocab_size {
        arch::set(&mut config, "vocab_size", json!(vocab_size));
    }
    if let Some(dtype) = dtype {
        let name = json!(dtype.torch_name());
        let mut set_any = false;
        for key in ["torch_dtype", "dtype"] {
            if let Some(v) = config.get_mut(key) {
                *v = name.clone();
                set_any = true;
            }
        }
        if !set_any {
            config.insert("torch_dtype".into(), name);
        }
    }
    config
}

/// Writes JSON with two-space indentation and a final newline, as transformers does.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    fs::write(path, text).map_err(|e| MergeError::io("write", path, e))
}

/// Writes `model.safetensors.index.json` for sharded output.
pub fn write_index(dir: &Path, weight_map: &[(String, String)], total_size: u64) -> Result<()> {
    let map: Map<String, Value> = weight_map.iter().map(|(n, f)| (n.clone(), json!(f))).collect();
    let index = json!({
        "metadata": {"total_size": total_size, "amalgam_version": env!("CARGO_PKG_VERSION")},
        "weight_map": map,
    });
    write_json(&dir.join(amalgam_tensors::folder::INDEX_FILE), &index)
}

/// Copies the donor's tokenizer files (and `generation_config.json`) into `dir`, if the
/// donor has a tokenizer (`tokenizer_config.json` plus `tokenizer.json` or
/// `tokenizer.model`); a GGUF donor's are rebuilt from its metadata. Returns the names
/// written.
pub fn copy_tokenizer(donor: &Model, dir: &Path) -> Result<Vec<&'static str>> {
    if let Model::Gguf(g) = donor.unadapted() {
        let files = g.tokenizer_files().unwrap_or_default();
        for (name, bytes) in &files {
            let path = dir.join(name);
            fs::write(&path, bytes).map_err(|e| MergeError::io("write", &path, e))?;
        }
        return Ok(files.iter().map(|(n, _)| *n).collect());
    }
    let has_tokenizer = donor.file("tokenizer_config.json").is_some()
        && (donor.file("tokenizer.json").is_some() || donor.file("tokenizer.model").is_some());
    if !has_tokenizer {
        return Ok(Vec::new());
    }
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        if let Some(source) = donor.file(name) {
            let target = dir.join(name);
            fs::copy(&source, &target).map_err(|e| MergeError::io("copy", &source, e))?;
            copied.push(*name);
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_the_source_key_style() {
        let llama = &arch::ARCHITECTURES[0];
        let donor = json!({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 80,
                           "rope_theta": 500000.0, "torch_dtype": "bfloat16"});
        let origins: Vec<usize> = (0..7).flat_map(|s| s * 10..s * 10 + 20).collect();
        let out = output_config(
            donor.as_object().unwrap(),
            llama,
            Some(&origins),
            None,
            Some(DType::F16),
            &mut Vec::new(),
        );
        assert_eq!(out["num_hidden_layers"], json!(140));
        assert_eq!(out["torch_dtype"], json!("float16"));
        assert_eq!(out["rope_theta"], json!(500000.0));
        assert!(!out.contains_key("dtype"));
        let keys: Vec<&String> = out.keys().collect();
        assert_eq!(keys, ["architectures", "num_hidden_layers", "rope_theta", "torch_dtype"]);

        let v5 = json!({"dtype": "bfloat16", "num_hidden_layers": 6});
        let out = output_config(
            v5.as_object().unwrap(),
            llama,
            None,
            None,
            Some(DType::F32),
            &mut Vec::new(),
        );
        assert_eq!(out["dtype"], json!("float32"));
        assert_eq!(out["num_hidden_layers"], json!(6));
        assert!(!out.contains_key("torch_dtype"));
    }
}
