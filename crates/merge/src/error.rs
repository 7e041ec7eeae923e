//! The merge crate's error type. Messages keep mergekit's wording where mergekit has one
//! (so searches for mergekit errors still help) and add the location and the fix.

use std::path::PathBuf;

/// Everything that can stop a merge.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The YAML is malformed or asks for something invalid; `location` is the key path,
    /// such as `slices[0].sources[1].layer_range`.
    #[error("config error at {location}: {message}")]
    Config { location: String, message: String },

    /// The YAML text does not parse.
    #[error("config is not valid YAML: {0}")]
    Yaml(String),

    /// Something the config asks for that amalgam does not do yet.
    #[error("{0}")]
    Unsupported(String),

    /// An input model cannot be found, read or used.
    #[error("model {model}: {message}")]
    Model { model: String, message: String },

    /// The inputs of one output tensor do not fit together.
    #[error("{0}")]
    Tensor(String),

    #[error(transparent)]
    Storage(#[from] amalgam_tensors::Error),

    #[error(transparent)]
    Gguf(#[from] amalgam_gguf::GgufError),

    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    /// The caller's measurement of the staged merge failed (see `quality`).
    #[error("evaluating the merge: {0}")]
    Evaluation(String),

    /// The output folder is in the way.
    #[error("{0}")]
    Output(String),
}

impl MergeError {
    /// A config error at `location`.
    pub fn config(location: impl Into<String>, message: impl Into<String>) -> MergeError {
        MergeError::Config { location: location.into(), message: message.into() }
    }

    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MergeError::Io { action, path: path.into(), source }
    }
}

/// The result type of this crate.
pub type Result<T, E = MergeError> = std::result::Result<T, E>;
