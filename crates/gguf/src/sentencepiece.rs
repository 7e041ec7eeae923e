//! SentencePiece `tokenizer.model` files (Llama 2, Mistral): a minimal protobuf reader for
//! the pieces (text, score, type) and `add_dummy_prefix`, the `tokenizer.*` metadata of
//! llama.cpp's `llama` tokenizer model built from them, and the reverse — a
//! `tokenizer.model` written from a GGUF's token list.

// Untrusted bytes are parsed here: every index is checked.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use serde_json::{Map, Value as Json};

use crate::error::{GgufError, Result};
use crate::value::{Value, ValueType};

/// One piece of the vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    /// SentencePiece's type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte — the same numbers llama.cpp's token types use.
    pub kind: i32,
}

/// A parsed SentencePiece model.
#[derive(Clone, Debug, PartialEq)]
pub struct SpModel {
    pub pieces: Vec<Piece>,
    pub add_dummy_prefix: bool,
}

/// Reads protobuf fields: (field number, wire type, payload).
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

enum Payload<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Fixed64,
    Bytes(&'a [u8]),
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// The next field, `Some(Err)` if the bytes are malformed.
    fn next_field(&mut self) -> Option<Result<(u64, Payload<'a>), ()>> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let parsed = (|| {
            let key = self.varint()?;
            let payload = match key & 7 {
                0 => Payload::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Payload::Fixed64
                }
                2 => {
                    let n = self.varint()? as usize;
                    Payload::Bytes(self.take(n)?)
                }
                5 => {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(self.take(4)?);
                    Payload::Fixed32(b)
                }
                _ => return None,
            };
            Some((key >> 3, payload))
        })();
        Some(parsed.ok_or(()))
    }
}

fn invalid() -> GgufError {
    GgufError::Convert(
        "tokenizer.model is not a SentencePiece model (the protobuf does not parse)".into(),
    )
}

/// Parses a `tokenizer.model`.
pub fn parse(bytes: &[u8]) -> Result<SpModel> {
    let mut model = SpModel { pieces: Vec::new(), add_dummy_prefix: true };
    let mut fields = Fields { bytes, pos: 0 };
    while let Some(field) = fields.next_field() {
        match field.map_err(|()| invalid())? {
            (1, Payload::Bytes(piece)) => model.pieces.push(parse_piece(piece)?),
            (3, Payload::Bytes(normalizer)) => {
                let mut inner = Fields { bytes: normalizer, pos: 0 };
                while let Some(f) = inner.next_field() {
                    if let (3, Payload::Varint(v)) = f.map_err(|()| invalid())? {
                        model.add_dummy_prefix = v != 0;
                    }
                }
            }
            _ => {}
        }
    }
    if model.pieces.is_empty() {
        return Err(invalid());
    }
    Ok(model)
}

fn parse_piece(bytes: &[u8]) -> Result<Piece> {
    let mut piece = Piece { text: String::new(), score: 0.0, kind: 1 };
    let mut fields = Fields { bytes, pos: 0 };
    while let Some(field) = fields.next_field() {
        match field.map_err(|()| invalid())? {
            (1, Payload::Bytes(text)) => {
                piece.text = String::from_utf8(text.to_vec()).map_err(|_| invalid())?
            }
            (2, Payload::Fixed32(b)) => piece.score = f32::from_le_bytes(b),
            (3, Payload::Varint(v)) => piece.kind = v as i32,
            _ => {}
        }
    }
    Ok(piece)
}

/// `tokenizer.*` metadata of llama.cpp's `llama` (SentencePiece) tokenizer model. Ids past
/// the model's pieces up to `vocab_size` become `[PAD<id>]` (unused); `added_tokens.json`
/// entries override theirs as user-defined tokens; special ids come from
/// `tokenizer_config.json`/`config.json` as for BPE.
pub fn metadata(
    model: &SpModel,
    added: Option<&Map<String, Json>>,
    vocab_size: usize,
) -> Vec<(String, Value)> {
    let mut pieces: Vec<Piece> = model.pieces.clone();
    while pieces.len() < vocab_size {
        let i = pieces.len();
        pieces.push(Piece { text: format!("[PAD{i}]"), score: -1000.0, kind: 5 });
    }
    pieces.truncate(vocab_size);
    for (text, id) in added.into_iter().flatten() {
        if let Some(p) = id.as_u64().and_then(|id| pieces.get_mut(id as usize)) {
            *p = Piece { text: text.clone(), score: -1000.0, kind: 4 };
        }
    }
    vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), Value::strings(pieces.iter().map(|p| p.text.clone()))),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(ValueType::F32, pieces.iter().map(|p| Value::F32(p.score)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(ValueType::I32, pieces.iter().map(|p| Value::I32(p.kind)).collect()),
        ),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(model.add_dummy_prefix)),
    ]
}

/// Serializes a SentencePiece model (pieces, a BPE trainer spec and the normalizer's
/// `add_dummy_prefix`) as `tokenizer.model` bytes.
pub fn write(model: &SpModel) -> Vec<u8> {
    let mut out = Vec::new();
    for p in &model.pieces {
        let mut piece = Vec::new();
        put_bytes(&mut piece, 1, p.text.as_bytes());
        put_key(&mut piece, 2, 5);
        piece.extend_from_slice(&p.score.to_le_bytes());
        put_key(&mut piece, 3, 0);
        put_varint(&mut piece, p.kind as u64);
        put_bytes(&mut out, 1, &piece);
    }
    // trainer_spec { model_type: BPE (2), byte_fallback: true }
    let mut trainer = Vec::new();
    put_key(&mut trainer, 3, 0);
    put_varint(&mut trainer, 2);
    put_key(&mut trainer, 35, 0);
    put_varint(&mut trainer, 1);
    put_bytes(&mut out, 2, &trainer);
    // normalizer_spec { name: "identity", add_dummy_prefix, remove_extra_whitespaces: false }
    let mut normalizer = Vec::new();
    put_bytes(&mut normalizer, 1, b"identity");
    put_key(&mut normalizer, 3, 0);
    put_varint(&mut normalizer, u64::from(model.add_dummy_prefix));
    put_key(&mut normalizer, 4, 0);
    put_varint(&mut normalizer, 0);
    put_bytes(&mut out, 3, &normalizer);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SpModel {
        SpModel {
            pieces: vec![
                Piece { text: "<unk>".into(), score: 0.0, kind: 2 },
                Piece { text: "<s>".into(), score: 0.0, kind: 3 },
                Piece { text: "</s>".into(), score: 0.0, kind: 3 },
                Piece { text: "<0x0A>".into(), score: 0.0, kind: 6 },
                Piece { text: "▁the".into(), score: -1.5, kind: 1 },
            ],
            add_dummy_prefix: false,
        }
    }

    #[test]
    fn writes_and_reads_back() {
        let bytes = write(&sample());
        assert_eq!(parse(&bytes).unwrap(), sample());
    }

    #[test]
    fn llama_metadata_pads_and_applies_added_tokens() {
        let added: Map<String, Json> = serde_json::from_str(r#"{"<extra>": 6}"#).unwrap();
        let meta = metadata(&sample(), Some(&added), 8);
        let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        let tokens = get("tokenizer.ggml.tokens");
        let tokens: Vec<&str> =
            tokens.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(
            tokens,
            ["<unk>", "<s>", "</s>", "<0x0A>", "▁the", "[PAD5]", "<extra>", "[PAD7]"]
        );
        let types = get("tokenizer.ggml.token_type");
        assert_eq!(types.as_array().unwrap()[3], Value::I32(6));
        assert_eq!(types.as_array().unwrap()[6], Value::I32(4));
        assert_eq!(get("tokenizer.ggml.add_space_prefix"), Value::Bool(false));
        assert_eq!(get("tokenizer.ggml.scores").as_array().unwrap()[4], Value::F32(-1.5));
    }

    #[test]
    fn garbage_is_an_error() {
        let not_a_model = |bytes: &[u8]| {
            let err = parse(bytes).err().map(|e| e.to_string()).unwrap_or_default();
            err.contains("tokenizer.model is not a SentencePiece model")
        };
        assert!(not_a_model(b"\xff\xff\xff"));
        assert!(not_a_model(b""), "no pieces");
        // A Llama 3 tiktoken file is text, not protobuf.
        assert!(not_a_model(b"IQ== 0\nIg== 1\n"));
    }
}
