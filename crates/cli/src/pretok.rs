//! Identifying a BPE tokenizer's pre-tokenizer for `tokenizer.ggml.pre` the way llama.cpp's
//! converter does: encode a fixed probe text, hash the id list, look the hash up. This is
//! the one place amalgam tokenizes text for GGUF; the gguf and merge crates receive the
//! result (they must not depend on `tokenizers`).

use std::path::Path;

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

/// llama.cpp's probe text (`chktxt` in convert_hf_to_gguf.py): whitespace runs, emoji
/// with joiners, digit runs, Khmer, Chinese, Cyrillic, quotes and English contractions.
const PROBE: &str = concat!(
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n",
    "\u{1F680} (normal) \u{1F636}\u{200D}\u{1F32B}\u{FE0F} (multiple emojis concatenated) \u{2705} ",
    "\u{1F999}\u{1F999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 ",
    "\u{1780}\u{17B6}\u{1793}\u{17CB}\u{178F}\u{17C2}\u{1796}\u{17B7}\u{179F}\u{17C1}\u{179F}\u{17A2}\u{17B6}\u{1785}",
    "\u{1F601} ?\u{6211}\u{60F3}\u{5728}apple\u{5DE5}\u{4F5C}1314151\u{5929}\u{FF5E} ------======= ",
    "\u{043D}\u{0435}\u{0449}\u{043E} \u{043D}\u{0430} \u{0411}\u{044A}\u{043B}\u{0433}\u{0430}\u{0440}\u{0441}\u{043A}\u{0438} ",
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, ",
    "'D you like some tea? We'Ve a'lL",
);

/// Known hashes of the probe's ids (with special tokens, as `transformers` encodes).
const KNOWN: &[(&str, &str)] = &[
    ("0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5", "llama-bpe"),
    ("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249", "smollm"),
];

/// The llama.cpp pre-tokenizer of `tokenizer.json`, if its probe hash is known.
///
/// The hashes were taken with each model's own BOS handling; a copy of a tokenizer whose
/// post-processor no longer adds the BOS (the Llama 3 tokenizer as some packages ship it)
/// is recognised by also trying the ids with the BOS token prepended.
pub fn detect(tokenizer_json: &Path) -> Option<&'static str> {
    let tokenizer = Tokenizer::from_file(tokenizer_json).ok()?;
    let ids = tokenizer.encode(PROBE, true).ok()?.get_ids().to_vec();
    let mut candidates = vec![ids.clone()];
    for bos in ["<|begin_of_text|>", "<s>", "<|endoftext|>"] {
        if let Some(id) = tokenizer.token_to_id(bos).filter(|id| ids.first() != Some(id)) {
            candidates.push(std::iter::once(id).chain(ids.iter().copied()).collect());
            break;
        }
    }
    candidates.iter().find_map(|ids| {
        let hash = probe_hash(ids);
        KNOWN.iter().find(|(h, _)| *h == hash).map(|(_, name)| *name)
    })
}

/// SHA-256 of Python's `str(list_of_ids)`: `[1, 2, 3]`.
fn probe_hash(ids: &[u32]) -> String {
    let text = format!("[{}]", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "));
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// [`detect`] for a model folder's `tokenizer.json`, if it has one.
pub fn detect_in(folder: &Path) -> Option<String> {
    let path = folder.join("tokenizer.json");
    path.exists().then(|| detect(&path)).flatten().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_of_pythons_list_repr() {
        // sha256("[1, 2, 3]")
        assert_eq!(
            probe_hash(&[1, 2, 3]),
            "a36b1f2c3f84522dd1005145646617d7054c0851e97c72a039c0bdfac9fa07f3"
        );
    }
}
