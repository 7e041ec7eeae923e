//! Text to token ids and back through the `tokenizers` crate (a `tokenizer.json`, or one
//! rebuilt from a GGUF's `tokenizer.ggml.*` metadata), and a decoder that streams text
//! as tokens arrive without splitting a character.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    origin: PathBuf,
}

impl Tokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Tokenizer { path: path.to_owned(), reason: e.to_string() })?;
        Tokenizer::from_bytes(&bytes, path)
    }

    /// Parses `tokenizer.json` bytes; `origin` names them in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer { path: origin.to_owned(), reason: e.to_string() })?;
        Ok(Tokenizer { inner, origin: origin.to_owned() })
    }

    /// Where the tokenizer came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Token ids of `text`; `add_special` lets the post-processor add BOS (or whatever
    /// the tokenizer adds). Special tokens written in the text are recognized.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc =
            self.inner.encode(text, add_special).map_err(|e| Error::Tokenize(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`; `skip_special` leaves out special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::Tokenize(e.to_string()))
    }

    /// The id of a token's text, special tokens included.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of a token id.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The token the post-processor puts first when asked to add special tokens (BOS),
    /// if any.
    pub fn added_prefix(&self) -> Option<u32> {
        let with = self.encode("a", true).ok()?;
        let without = self.encode("a", false).ok()?;
        (with.len() > without.len() && with.ends_with(&without)).then(|| with[0])
    }
}

/// Turns a stream of token ids into text, holding back bytes that do not yet make a
/// whole character.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tokenizer: &'t Tokenizer) -> StreamDecoder<'t> {
        StreamDecoder { tokenizer, ids: Vec::new(), printed: 0 }
    }

    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}')
            || text.len() < self.printed
            || !text.is_char_boundary(self.printed)
        {
            return Ok(String::new());
        }
        let new = text[self.printed..].to_owned();
        self.printed = text.len();
        Ok(new)
    }

    /// The text not yet returned (bytes held back waiting for a character's end).
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tokenizer.decode(&self.ids, true)?;
        let rest = text.get(self.printed..).unwrap_or("").to_owned();
        self.printed = text.len();
        Ok(rest)
    }

    /// All the text so far.
    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.ids, true)
    }
}
