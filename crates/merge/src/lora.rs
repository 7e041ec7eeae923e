//! PEFT LoRA adapters (`model+adapter`) applied while streaming: a targeted weight reads
//! as `W + scale · B·A` (the transpose for embeddings), a `modules_to_save` tensor
//! replaces the base's, and no merged copy is ever written.
//!
//! The arithmetic follows PEFT's `merge_and_unload` as mergekit runs it on the CPU (see
//! [`Adapter::apply`]); checked bit for bit against mergekit 0.1.5 with PEFT 0.21.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use amalgam_tensors::dtype::{decode_f32, round_to};
use amalgam_tensors::{DType, SafetensorsFile, TensorInfo};
use serde_json::{Map, Value};

use crate::error::{MergeError, Result};

/// The prefix PEFT gives every saved key of a causal language model.
const PEFT_PREFIX: &str = "base_model.model.";

/// An open LoRA adapter folder.
pub struct Adapter {
    folder: PathBuf,
    file: SafetensorsFile,
    /// Low-rank updates by the base weight they change.
    deltas: HashMap<String, Delta>,
    /// Whole tensors (`modules_to_save`) by the base weight they replace, with their key.
    replacements: HashMap<String, String>,
}

/// One low-rank update `scale · B·A` of a base weight.
pub struct Delta {
    a: String,
    b: String,
    rank: usize,
    scale: f32,
    /// An embedding update (`lora_embedding_A/B`), applied transposed.
    embedding: bool,
}

/// The two factors of one module while its keys are collected.
#[derive(Default)]
struct Factors {
    a: Option<String>,
    b: Option<String>,
    embedding: bool,
}

impl Adapter {
    /// Opens `folder` (`adapter_config.json` and `adapter_model.safetensors`), refusing
    /// adapter kinds whose merge is not `W + scale · B·A`.
    pub fn open(folder: &Path) -> Result<Adapter> {
        let error =
            |message: String| MergeError::Model { model: folder.display().to_string(), message };
        let config_path = folder.join("adapter_config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            error(format!("cannot read {}: {e}; a LoRA adapter folder has adapter_config.json and adapter_model.safetensors", config_path.display()))
        })?;
        let config: Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| error(format!("{} is not a JSON object: {e}", config_path.display())))?;
        check_config(&config).map_err(error)?;
        let weights = folder.join("adapter_model.safetensors");
        if !weights.is_file() {
            return Err(error(format!(
                "{} is missing{}",
                weights.display(),
                if folder.join("adapter_model.bin").is_file() {
                    " (the adapter is a pickle, adapter_model.bin, which amalgam never loads; \
                     re-save it with safe_serialization=True)"
                } else {
                    ""
                }
            )));
        }
        let file = SafetensorsFile::open(&weights)?;
        let mut factors: HashMap<String, Factors> = HashMap::new();
        let mut replacements = HashMap::new();
        for key in file.names() {
            match classify(key).map_err(error)? {
                Key::A(module, embedding) => {
                    let f = factors.entry(module).or_default();
                    f.a = Some(key.to_owned());
                    f.embedding = embedding;
                }
                Key::B(module) => factors.entry(module).or_default().b = Some(key.to_owned()),
                Key::Whole(name) => {
                    replacements.insert(name, key.to_owned());
                }
            }
        }
        let mut deltas = HashMap::new();
        for (module, f) in factors {
            let (Some(a), Some(b)) = (f.a, f.b) else {
                return Err(error(format!("{module} has only one of its lora_A and lora_B")));
            };
            let rank = tensor_info(&file, &a)?.shape.first().copied().unwrap_or(0);
            let scale = scale(&config, &module, rank).map_err(error)?;
            deltas.insert(
                format!("{module}.weight"),
                Delta { a, b, rank, scale, embedding: f.embedding },
            );
        }
        Ok(Adapter { folder: folder.to_owned(), file, deltas, replacements })
    }

    /// The adapter folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The update for a base weight, if the adapter changes it.
    pub fn delta(&self, name: &str) -> Option<&Delta> {
        self.deltas.get(name)
    }

    /// The tensor replacing a base weight, if the adapter saves one.
    pub fn replacement(&self, name: &str) -> Result<Option<(&SafetensorsFile, &TensorInfo)>> {
        match self.replacements.get(name) {
            Some(key) => Ok(Some((&self.file, tensor_info(&self.file, key)?))),
            None => Ok(None),
        }
    }

    /// Every base weight the adapter updates or replaces.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.deltas.keys().chain(self.replacements.keys()).map(String::as_str)
    }

    /// Checks that `delta`'s factors fit a base weight of `shape`.
    pub fn check_shape(&self, name: &str, delta: &Delta, shape: &[usize]) -> Result<()> {
        let a = &tensor_info(&self.file, &delta.a)?.shape;
        let b = &tensor_info(&self.file, &delta.b)?.shape;
        let (rows, cols) = match shape {
            [rows, cols] => (*rows, *cols),
            _ => (0, 0),
        };
        // Linear: A [r, in], B [out, r]. Embedding: A [r, vocab], B [dim, r], transposed.
        let fits = if delta.embedding {
            a.as_slice() == [delta.rank, rows] && b.as_slice() == [cols, delta.rank]
        } else {
            a.as_slice() == [delta.rank, cols] && b.as_slice() == [rows, delta.rank]
        };
        if fits {
            return Ok(());
        }
        Err(MergeError::Model {
            model: self.folder.display().to_string(),
            message: format!(
                "its update of {name} has factors A {a:?} and B {b:?}, which do not fit the \
                 base weight {shape:?}; the adapter was trained for another model"
            ),
        })
    }

    /// Adds the update to `out`, which holds the base weight's elements `start..` (of a
    /// weight with `cols` columns) in f32, and rounds the sums to `dtype`, as PEFT's
    /// `merge_and_unload` does on the CPU: `B·A` in float32 (PEFT upcasts 16-bit adapter
    /// weights as it loads them) with fused multiply-adds over the rank, as torch's
    /// matmul sums, times the scale; for embeddings rounded to the base's dtype before
    /// the add.
    pub fn apply(
        &self,
        delta: &Delta,
        cols: usize,
        start: usize,
        out: &mut [f32],
        dtype: DType,
    ) -> Result<()> {
        let rank = delta.rank;
        let cols = cols.max(1);
        let a = self.factor(&delta.a, 0, usize::MAX)?;
        let a_cols = a.len() / rank.max(1);
        let round_delta = |d: f32| if delta.embedding { round_to(dtype, d) } else { d };
        let finish = |value: f32, sum: f32| round_to(dtype, value + round_delta(sum * delta.scale));
        let (b, first) = if delta.embedding {
            // (B·A)ᵀ[row, col] = Σ B[col, k] A[k, row]: every row of B is needed.
            (self.factor(&delta.b, 0, usize::MAX)?, 0)
        } else {
            // Only the rows of B that this chunk covers.
            let first = start / cols;
            let last = (start + out.len()).div_ceil(cols);
            (self.factor(&delta.b, first * rank, last * rank)?, first)
        };
        let low_rank = LowRank { a: &a, a_cols, b: &b, first, rank, embedding: delta.embedding };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports FMA, checked just above.
            unsafe { low_rank.add_to_fma(out, start, cols, &finish) };
            return Ok(());
        }
        low_rank.add_to(out, start, cols, &finish);
        Ok(())
    }

    /// Elements `from..to` (clamped to its length) of a factor, decoded to f32.
    fn factor(&self, key: &str, from: usize, to: usize) -> Result<Vec<f32>> {
        let info = tensor_info(&self.file, key)?;
        let (to, size) = (to.min(info.numel()), info.dtype.size());
        let from = from.min(to);
        let mut values = vec![0f32; to - from];
        let bytes = self.file.bytes(info.start + from * size, info.start + to * size);
        decode_f32(info.dtype, bytes, &mut values);
        Ok(values)
    }
}

/// One chunk's view of a low-rank update's decoded factors.
struct LowRank<'a> {
    a: &'a [f32],
    a_cols: usize,
    /// Rows `first..` of B.
    b: &'a [f32],
    first: usize,
    rank: usize,
    embedding: bool,
}

impl LowRank<'_> {
    /// `out[e] = finish(out[e], (B·A)[start + e])` (transposed for embeddings), each
    /// product a float32 sum of fused multiply-adds over the rank, in order: what torch's
    /// float32 matmul computes for a small inner dimension.
    #[inline(always)]
    fn add_to(
        &self,
        out: &mut [f32],
        start: usize,
        cols: usize,
        finish: &impl Fn(f32, f32) -> f32,
    ) {
        let (a, b, rank) = (self.a, self.b, self.rank);
        for (e, value) in out.iter_mut().enumerate() {
            let (row, col) = ((start + e) / cols, (start + e) % cols);
            let (b_row, a_col) = if self.embedding { (col, row) } else { (row - self.first, col) };
            let sum = (0..rank)
                .fold(0f32, |sum, k| b[b_row * rank + k].mul_add(a[k * self.a_cols + a_col], sum));
            *value = finish(*value, sum);
        }
    }

    /// [`LowRank::add_to`] compiled for hardware FMA (`mul_add` is otherwise a libm call).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    fn add_to_fma(
        &self,
        out: &mut [f32],
        start: usize,
        cols: usize,
        finish: &impl Fn(f32, f32) -> f32,
    ) {
        self.add_to(out, start, cols, finish);
    }
}

fn tensor_info<'a>(file: &'a SafetensorsFile, key: &str) -> Result<&'a TensorInfo> {
    file.info(key)?.ok_or_else(|| MergeError::Model {
        model: file.path().display().to_string(),
        message: format!("tensor {key} is listed but cannot be read"),
    })
}

/// What a saved adapter key holds.
enum Key {
    /// `lora_A` of a module (true: an embedding's `lora_embedding_A`).
    A(String, bool),
    B(String),
    /// A whole tensor replacing the base weight of this name.
    Whole(String),
}

/// Sorts a saved key, refusing the parts of adapter kinds amalgam cannot apply.
fn classify(key: &str) -> std::result::Result<Key, String> {
    let name = key.strip_prefix(PEFT_PREFIX).unwrap_or(key);
    if name.contains("lora_magnitude_vector") {
        return Err(format!(
            "{key} is a DoRA magnitude; DoRA adapters are not supported (only plain LoRA)"
        ));
    }
    if name.ends_with(".lora_B.bias") {
        return Err(format!("{key}: LoRA biases (lora_bias: true) are not supported"));
    }
    if name.contains("token_adapter") {
        return Err(format!("{key}: trainable-token adapters are not supported"));
    }
    if let Some(module) = name.strip_suffix(".lora_A.weight") {
        return Ok(Key::A(module.to_owned(), false));
    }
    if let Some(module) = name.strip_suffix(".lora_embedding_A") {
        return Ok(Key::A(module.to_owned(), true));
    }
    if let Some(module) =
        name.strip_suffix(".lora_B.weight").or_else(|| name.strip_suffix(".lora_embedding_B"))
    {
        return Ok(Key::B(module.to_owned()));
    }
    if name.contains("lora_") {
        return Err(format!("{key} is not a LoRA factor amalgam knows"));
    }
    let whole = name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".");
    Ok(Key::Whole(whole))
}

/// Refuses adapter settings whose merge is not a plain low-rank update.
fn check_config(config: &Map<String, Value>) -> std::result::Result<(), String> {
    let peft_type = config.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
    if !peft_type.eq_ignore_ascii_case("LORA") {
        return Err(format!("its peft_type is {peft_type}; only LoRA adapters are supported"));
    }
    let flag = |key: &str| config.get(key).and_then(Value::as_bool) == Some(true);
    if flag("use_dora") {
        return Err("it is a DoRA adapter (use_dora: true); only plain LoRA is supported".into());
    }
    if flag("lora_bias") {
        return Err("it trains LoRA biases (lora_bias: true), which is not supported".into());
    }
    let set =
        |key: &str| config.get(key).is_some_and(|v| !v.is_null() && v != &Value::Array(vec![]));
    for key in ["layer_replication", "target_parameters", "trainable_token_indices"] {
        if set(key) {
            return Err(format!("it sets {key}, which amalgam does not support"));
        }
    }
    Ok(())
}

/// `lora_alpha / r` (over `sqrt(r)` with `use_rslora`), with the module's `rank_pattern`
/// and `alpha_pattern` entries applied. A pattern key matches a module named by it or
/// ending in `.key` (PEFT's `(.*\.)?key$`, keys taken literally).
fn scale(
    config: &Map<String, Value>,
    module: &str,
    rank: usize,
) -> std::result::Result<f32, String> {
    let number = |v: &Value| v.as_f64();
    let pattern = |key: &str| -> Option<f64> {
        let map = config.get(key)?.as_object()?;
        map.iter()
            .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
            .and_then(|(_, v)| number(v))
    };
    let r = pattern("rank_pattern").or_else(|| config.get("r").and_then(number)).unwrap_or(8.0);
    if r as usize != rank {
        return Err(format!(
            "{module}'s factors have rank {rank} but adapter_config.json gives it rank {r}"
        ));
    }
    let alpha = pattern("alpha_pattern")
        .or_else(|| config.get("lora_alpha").and_then(number))
        .unwrap_or(8.0);
    let rslora = config.get("use_rslora").and_then(Value::as_bool) == Some(true);
    Ok((if rslora { alpha / r.sqrt() } else { alpha / r }) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn scale_follows_patterns_and_rslora() {
        let c = map(json!({"r": 8, "lora_alpha": 16, "rank_pattern": {"v_proj": 4},
                           "alpha_pattern": {"model.layers.1.self_attn.q_proj": 4}}));
        assert_eq!(scale(&c, "model.layers.0.self_attn.q_proj", 8), Ok(2.0));
        assert_eq!(scale(&c, "model.layers.1.self_attn.q_proj", 8), Ok(0.5));
        assert_eq!(scale(&c, "model.layers.0.self_attn.v_proj", 4), Ok(4.0));
        // `v_proj` must not match `xv_proj`.
        assert!(scale(&c, "model.layers.0.self_attn.xv_proj", 4).unwrap_err().contains("rank 8"));
        let c = map(json!({"r": 16, "lora_alpha": 8, "use_rslora": true}));
        assert_eq!(scale(&c, "m", 16), Ok(2.0));
    }

    #[test]
    fn keys_are_sorted_and_other_kinds_refused() {
        let a = classify("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
        assert!(matches!(a, Ok(Key::A(m, false)) if m == "model.layers.0.self_attn.q_proj"));
        let e = classify("base_model.model.model.embed_tokens.lora_embedding_B");
        assert!(matches!(e, Ok(Key::B(m)) if m == "model.embed_tokens"));
        let w = classify("base_model.model.lm_head.weight");
        assert!(matches!(w, Ok(Key::Whole(n)) if n == "lm_head.weight"));
        let w = classify("base_model.model.model.embed_tokens.base_layer.weight");
        assert!(matches!(w, Ok(Key::Whole(n)) if n == "model.embed_tokens.weight"));
        let dora = classify("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector");
        assert!(dora.err().unwrap().contains("DoRA"));
        assert!(check_config(&map(json!({"peft_type": "IA3"}))).unwrap_err().contains("IA3"));
        assert!(check_config(&map(json!({"use_dora": true}))).unwrap_err().contains("DoRA"));
        assert!(
            check_config(&map(json!({"peft_type": "LORA", "target_parameters": null}))).is_ok()
        );
    }
}
