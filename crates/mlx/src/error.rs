//! The errors of MLX quantization, each naming what to change.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MlxError {
    #[error("MLX quantizes to 2, 3, 4, 5, 6 or 8 bits, not {0} (--q-bits)")]
    Bits(u32),
    #[error("MLX groups 32, 64 or 128 values, not {0} (--q-group-size)")]
    GroupSize(usize),
    #[error(
        "unknown quantization recipe {0:?}: mlx_lm's are mixed_2_6, mixed_3_4, mixed_3_6 and mixed_4_6 (--quant-predicate)"
    )]
    Recipe(String),
    #[error("{0} tensors in one safetensors file: more than amalgam can lay out as mlx does")]
    TooManyTensors(usize),
    #[error("writing an MLX file: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, MlxError>;
