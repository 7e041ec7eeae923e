//! `tokenizer.json` files rebuilt from a GGUF vocabulary, for the `tokenizers` library:
//! byte-level BPE (`gpt2`, with the pre-tokenizer `tokenizer.ggml.pre` names) and
//! SentencePiece BPE (`llama`: merges recovered from the pieces' scores, byte fallback, the
//! `▁` space prefix), laid out as Hugging Face's own files lay them out.

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};

use crate::tokenizer::{CONTROL, USER_DEFINED};

/// The pre-tokenizer of a llama.cpp pre-tokenizer name.
fn pre_tokenizer(pre: &str) -> Json {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    match pre {
        "llama-bpe" | "llama3" | "llama-v3" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
            byte_level(false)]}),
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        _ => byte_level(true),
    }
}

/// Llama 3's pre-tokenizer split pattern.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A `tokenizer.json` for a byte-level BPE vocabulary.
pub fn bpe_json(
    tokens: &[String],
    types: &[i64],
    merges: &[String],
    pre: &str,
    bos: Option<&str>,
) -> Json {
    let is_added = |i: usize| matches!(types.get(i).copied(), Some(t) if t == i64::from(CONTROL) || t == i64::from(USER_DEFINED));
    // Hugging Face's own files keep added tokens that follow the vocabulary (Llama 3's)
    // out of `model.vocab`, and those among it (SmolLM2's ids 0-16) in it: the tokenizers
    // library numbers an added token missing from the vocabulary after the vocabulary.
    let added_count = (0..tokens.len()).filter(|&i| is_added(i)).count();
    let tail = (0..tokens.len()).filter(|&i| is_added(i)).all(|i| i >= tokens.len() - added_count);
    let vocab: Map<String, Json> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| !(tail && is_added(*i)))
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Json> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| is_added(*i))
        .map(|(i, t)| {
            let special = types[i] == i64::from(CONTROL);
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": !special, "special": special})
        })
        .collect();
    let post = match bos {
        Some(_) => bos_processor(tokens, bos),
        None => {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        }
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre),
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": matches!(pre, "llama-bpe" | "llama3" | "llama-v3"),
                  "vocab": vocab, "merges": merges},
    })
}

/// A SentencePiece vocabulary's settings for [`spm_json`].
pub struct SpmVocab<'a> {
    pub tokens: &'a [String],
    pub scores: &'a [f32],
    pub types: &'a [i64],
    pub add_space_prefix: bool,
    pub bos: Option<&'a str>,
    pub unk: Option<&'a str>,
}

/// A `tokenizer.json` for a SentencePiece BPE vocabulary (Llama 2, Mistral): a BPE model
/// whose merges are every split of a piece into two pieces, ranked by the piece's score
/// (higher first), with byte fallback, and `▁` for spaces (one prepended to each text
/// run when `add_space_prefix`).
pub fn spm_json(v: &SpmVocab) -> Json {
    let is_added = |i: usize| matches!(v.types.get(i).copied(), Some(t) if t == i64::from(CONTROL) || t == i64::from(USER_DEFINED));
    let ids: HashMap<&str, usize> =
        v.tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in v.tokens.iter().enumerate() {
        // Only normal pieces are merge results (not bytes, controls or the unknown).
        if !matches!(v.types.get(id), Some(1) | None) {
            continue;
        }
        let score = v.scores.get(id).copied().unwrap_or(0.0);
        for (k, _) in piece.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&piece[..k]), ids.get(&piece[k..])) {
                merges.push((score, id, l, r));
            }
        }
    }
    // Higher scores first; for one piece, by the ids of its halves.
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3))
    });
    let merges: Vec<Json> =
        merges.iter().map(|&(_, _, l, r)| json!([v.tokens[l], v.tokens[r]])).collect();
    let vocab: Map<String, Json> =
        v.tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<Json> = (0..v.tokens.len())
        .filter(|&i| is_added(i))
        .map(|i| {
            let special = v.types[i] == i64::from(CONTROL);
            json!({"id": i, "content": v.tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": !special, "special": special})
        })
        .collect();
    let mut normalizers = Vec::new();
    if v.add_space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if v.add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": bos_processor(v.tokens, v.bos),
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": v.unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    })
}

/// A post-processor that puts `bos` first, or none.
fn bos_processor(tokens: &[String], bos: Option<&str>) -> Json {
    let Some(bos) = bos else { return Json::Null };
    json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [tokens.iter().position(|t| t == bos)], "tokens": [bos]}}})
}
