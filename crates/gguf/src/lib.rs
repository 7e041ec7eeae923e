//! GGUF for amalgam: ggml tensor types, the quant blocks (byte-exact ports of ggml's
//! reference quantizers, used by the writer and by inference), the GGUF container, and
//! llama.cpp's quantization mixtures.

pub mod ggml_type;
pub mod mixture;
pub mod names;
pub mod quant;

pub use ggml_type::GgmlType;
pub use mixture::FileType;
