//! MLX for amalgam: mlx's affine quantization and its bit packing, byte-exact with mlx
//! 0.32 on the CPU (`affine`), and mlx_lm's choice of bits per layer (`recipe`). The
//! facts behind both are in `docs/mlx-format.md`.

// Library code returns errors on bad input; it does not panic (tests may).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod affine;
pub mod error;
pub mod recipe;

pub use affine::Affine;
pub use error::{MlxError, Result};
pub use recipe::Recipe;
