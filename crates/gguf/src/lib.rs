//! GGUF for amalgam: ggml tensor types, the quant blocks (byte-exact ports of ggml's
//! reference quantizers, used by the writer and by inference), the GGUF container, and
//! llama.cpp's quantization mixtures.

// Library code returns errors on bad input; it does not panic (tests may).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod blocks;
pub mod convert;
pub mod error;
pub mod ggml_type;
pub mod hf_tokenizer;
pub mod llama;
pub mod mixture;
pub mod model;
pub mod names;
pub mod quant;
pub mod read;
pub mod sentencepiece;
pub mod split;
pub mod tokenizer;
pub mod value;
pub mod write;

pub use error::{GgufError, Result};
pub use ggml_type::GgmlType;
pub use mixture::FileType;
pub use model::GgufModel;
pub use read::{GgufFile, Header, TensorInfo};
pub use value::{Value, ValueType};
pub use write::TensorSpec;
