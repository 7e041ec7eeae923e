//! The engine's typed errors: each names the file, tensor or setting at fault and, where
//! there is one, the fix.

use std::path::PathBuf;

/// An inference error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Tensors(#[from] amalgam_tensors::Error),
    #[error("{0}")]
    Gguf(#[from] amalgam_gguf::GgufError),
    #[error("config.json: {0}")]
    Config(String),
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error(
        "the model has no tensor {name}; a {arch} model needs it (is the file complete, and \
         is it a {arch} model?)"
    )]
    MissingTensor { name: String, arch: String },
    #[error(
        "the context is full: {needed} tokens do not fit in a context of {ctx}; pass a larger \
         --ctx-size (the model was trained for {trained})"
    )]
    ContextFull { needed: usize, ctx: usize, trained: usize },
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
