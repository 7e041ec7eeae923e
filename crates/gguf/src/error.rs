//! The gguf crate's error type: every variant names the file, and where it helps, the
//! byte offset or tensor.

use std::path::PathBuf;

/// What went wrong reading, writing or converting GGUF.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file is not valid GGUF (truncated, corrupt, or not GGUF at all).
    #[error("{path} is not a valid GGUF file: {reason} (at byte {offset})")]
    Invalid { path: PathBuf, offset: u64, reason: String },

    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    /// The model cannot be converted (an unsupported layout, a missing config key).
    #[error("{0}")]
    Convert(String),

    #[error(transparent)]
    Storage(#[from] amalgam_tensors::Error),
}

impl GgufError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> GgufError {
        GgufError::Io { action, path: path.into(), source }
    }
}

/// The result type of this crate.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
