//! MLX for amalgam: mlx's affine quantization and its bit packing, byte-exact with mlx
//! 0.32 on the CPU (`affine`), mlx_lm's choice of bits per layer (`recipe`), and
//! safetensors files laid out as mlx writes them (`file`, in the order `order` emulates).
//! The facts behind them are in `docs/mlx-format.md`.

// Library code returns errors on bad input; it does not panic (tests may).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod affine;
pub mod config;
pub mod convert;
pub mod dequantize;
pub mod error;
pub mod file;
pub mod fp;
pub mod header;
pub mod method;
pub mod order;
pub mod pyjson;
pub mod recipe;
pub mod source;
pub mod tree;

pub use affine::Affine;
pub use error::{MlxError, Result};
pub use method::Method;
pub use recipe::Recipe;
pub use source::Source;
