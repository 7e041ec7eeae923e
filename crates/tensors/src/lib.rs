//! Tensor storage for amalgam: element types and their exact conversions, safetensors
//! files read through a memory map and written as a stream, Hugging Face model folders,
//! the hub cache (with downloads behind the `hub-download` feature), and the write-aside-
//! then-rename mechanism every output goes through.
//!
//! Nothing here knows about merging; `amalgam-merge` and the GGUF code build on it.

// Library code returns errors on bad input; it does not panic (tests may).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod dtype;
pub mod error;
pub mod folder;
pub mod hub;
pub mod journal;
pub mod partial;
pub mod positioned;
pub mod safetensors;
pub mod writer;

pub use dtype::DType;
pub use error::{Error, Result};
pub use folder::{ModelFolder, TensorRef};
pub use positioned::{FileLayout, Parts, PositionedFile};
pub use safetensors::{SafetensorsFile, TensorInfo};
pub use writer::{TensorSpec, safetensors_layout};
