//! Llama tensors between Hugging Face and GGUF: the name table, the per-head row
//! permutation of Q and K (HF's rotate-half RoPE layout versus llama.cpp's adjacent pairs),
//! and shapes (GGUF lists dimensions innermost first).

use crate::error::{GgufError, Result};

/// HF per-layer suffixes and their GGUF names.
const LAYER_NAMES: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.bias", "attn_output.bias"),
];

/// HF names outside the layers and their GGUF names.
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// The GGUF name of an HF Llama tensor; `None` for tensors GGUF does not store
/// (`rotary_emb.inv_freq` and the like) or does not know.
pub fn hf_to_gguf(name: &str) -> Option<String> {
    if let Some((_, g)) = GLOBAL_NAMES.iter().find(|(h, _)| *h == name) {
        return Some((*g).to_owned());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, g) = LAYER_NAMES.iter().find(|(h, _)| *h == suffix)?;
    Some(format!("blk.{layer}.{g}"))
}

/// The HF name of a GGUF Llama tensor; `None` for GGUF-only tensors (`rope_freqs`).
pub fn gguf_to_hf(name: &str) -> Option<String> {
    if let Some((h, _)) = GLOBAL_NAMES.iter().find(|(_, g)| *g == name) {
        return Some((*h).to_owned());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (h, _) = LAYER_NAMES.iter().find(|(_, g)| *g == suffix)?;
    Some(format!("model.layers.{layer}.{h}"))
}

/// How many heads a GGUF tensor's rows are permuted over: `n_head` for Q, `n_head_kv`
/// for K (weights and biases), none otherwise.
pub fn permuted_heads(gguf_name: &str, n_head: usize, n_head_kv: usize) -> Option<usize> {
    if gguf_name.ends_with("attn_q.weight") || gguf_name.ends_with("attn_q.bias") {
        Some(n_head)
    } else if gguf_name.ends_with("attn_k.weight") || gguf_name.ends_with("attn_k.bias") {
        Some(n_head_kv)
    } else {
        None
    }
}

/// `heads` when the `rows` of the Q or K tensor `name` split into that many heads of an
/// even size (what the row permutation needs), else an error naming the tensor and the
/// settings that gave the count.
pub fn checked_heads(name: &str, rows: usize, heads: usize) -> Result<usize> {
    if heads > 0 && rows.is_multiple_of(heads) && (rows / heads).is_multiple_of(2) {
        return Ok(heads);
    }
    Err(GgufError::Convert(format!(
        "{name}: its {rows} rows do not split into {heads} attention heads of an even size; \
         check num_attention_heads and num_key_value_heads in config.json (in a GGUF, \
         llama.attention.head_count and head_count_kv)"
    )))
}

/// The HF row that GGUF row `row` holds: within each head of `rows / heads` rows, GGUF
/// row `2i + s` is HF row `s * hd/2 + i`.
pub fn hf_row_of_gguf_row(row: usize, rows: usize, heads: usize) -> usize {
    let hd = rows / heads;
    let (h, r) = (row / hd, row % hd);
    let (i, s) = (r / 2, r % 2);
    h * hd + s * (hd / 2) + i
}

/// The GGUF row that holds HF row `row` (the inverse of [`hf_row_of_gguf_row`]).
pub fn gguf_row_of_hf_row(row: usize, rows: usize, heads: usize) -> usize {
    let hd = rows / heads;
    let (h, r) = (row / hd, row % hd);
    let (s, i) = (r / (hd / 2), r % (hd / 2));
    h * hd + 2 * i + s
}

/// Reorders the rows of a row-major `[rows, cols]` matrix from HF's layout to GGUF's.
pub fn permute_to_gguf<T: Copy>(data: &[T], rows: usize, cols: usize, heads: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len());
    for row in 0..rows {
        let src = hf_row_of_gguf_row(row, rows, heads);
        out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
    }
    out
}

/// Undoes [`permute_to_gguf`].
pub fn permute_to_hf<T: Copy + Default>(
    data: &[T],
    rows: usize,
    cols: usize,
    heads: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); data.len()];
    for row in 0..rows {
        let dst = hf_row_of_gguf_row(row, rows, heads);
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[row * cols..(row + 1) * cols]);
    }
    out
}

/// GGUF dimensions (innermost first) of an HF shape (outermost first).
pub fn gguf_dims(hf_shape: &[usize]) -> Vec<u64> {
    hf_shape.iter().rev().map(|&d| d as u64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for hf in [
            "model.embed_tokens.weight",
            "model.layers.12.self_attn.k_proj.weight",
            "lm_head.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.norm.weight",
        ] {
            let g = hf_to_gguf(hf).unwrap();
            assert_eq!(gguf_to_hf(&g).as_deref(), Some(hf));
        }
        assert_eq!(
            hf_to_gguf("model.layers.3.self_attn.q_proj.weight").unwrap(),
            "blk.3.attn_q.weight"
        );
        assert_eq!(hf_to_gguf("model.layers.3.self_attn.rotary_emb.inv_freq"), None);
        assert_eq!(gguf_to_hf("rope_freqs.weight"), None);
    }

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // Two heads of 4 rows, one column: HF [0 1 2 3 | 4 5 6 7] -> [0 2 1 3 | 4 6 5 7].
        let hf: Vec<u32> = (0..8).collect();
        let g = permute_to_gguf(&hf, 8, 1, 2);
        assert_eq!(g, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(permute_to_hf(&g, 8, 1, 2), hf);
        for row in 0..8 {
            assert_eq!(hf_row_of_gguf_row(gguf_row_of_hf_row(row, 8, 2), 8, 2), row);
        }
        assert_eq!(gguf_dims(&[128, 256]), vec![256, 128]);
    }
}
