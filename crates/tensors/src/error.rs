//! The error type of the tensors crate: every variant names the file or tensor at fault
//! and, where there is one, the fix.

use std::io;
use std::path::PathBuf;

/// What went wrong reading or writing tensors and model folders.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },

    #[error(
        "{path} is not a valid safetensors file: {reason}. The file is probably truncated or \
         corrupt (an interrupted download or copy); fetch it again"
    )]
    Safetensors { path: PathBuf, reason: String },

    #[error(
        "tensor {name} in {path} has dtype {dtype}; amalgam reads only floating-point weights \
         (F32, F16, BF16, F64)"
    )]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },

    #[error("{path} is not valid JSON: {reason}")]
    Json { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    InvalidIndex { path: PathBuf, reason: String },

    #[error(
        "{index} names the shard {file:?}, which is outside the model folder; a shard index \
         may only name files inside its own folder (no absolute paths, no `..`). The index is \
         corrupt or malicious: fetch the model again from a source you trust"
    )]
    ShardOutsideFolder { index: PathBuf, file: String },

    #[error(
        "tensor {name} is listed in {index} but missing from its shard {shard}; the model \
         folder is incomplete: fetch it again"
    )]
    MissingFromShard { name: String, index: PathBuf, shard: PathBuf },

    #[error(
        "{folder} holds only PyTorch pickle weights ({file}); amalgam never loads pickles, \
         since unpickling can run arbitrary code. Convert them to safetensors first, e.g. \
         `python -c \"from transformers import AutoModelForCausalLM as M; \
         M.from_pretrained('{folder}').save_pretrained('{folder}-st', safe_serialization=True)\"`, \
         and merge that folder"
    )]
    PickleWeights { folder: PathBuf, file: String },

    #[error(
        "{folder} has no weights: expected model.safetensors or model.safetensors.index.json \
         with its shards"
    )]
    NoWeights { folder: PathBuf },

    #[error("{folder} has no config.json, so it is not a Hugging Face model folder")]
    NoConfig { folder: PathBuf },

    #[error("{0}")]
    ModelNotFound(String),

    #[error("downloading {repo}: {reason}")]
    Download { repo: String, reason: String },
}

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { action, path: path.into(), source }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
