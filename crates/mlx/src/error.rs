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
    #[error("unknown quantization mode {0:?}: mlx's are affine, mxfp4, nvfp4 and mxfp8 (--q-mode)")]
    Mode(String),
    #[error(
        "--q-mode {mode} takes {bits} bits in groups of {group_size}: drop --q-bits and --q-group-size or give those"
    )]
    FpSizes { mode: &'static str, bits: u32, group_size: usize },
    #[error(
        "the mixed recipes (--quant-predicate) work with affine quantization only, as in mlx_lm"
    )]
    RecipeMode,
    #[error(
        "tensor {0}: nvfp4 packs codes 32 at a time, and this tensor's size is not a multiple of 32, so mlx cannot quantize it"
    )]
    Nvfp4Size(String),
    #[error("{module} in this MLX folder: {reason}")]
    Layer { module: String, reason: String },
    #[error(
        "the model has no lm_head.weight and its config does not tie the output layer to the embeddings, so mlx_lm's {0} class would not load it"
    )]
    NoHead(&'static str),
    #[error("writing an MLX file: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: std::path::PathBuf, source: std::io::Error },
    #[error(
        "MLX output knows mlx_lm's classes for model_type llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text and phi3, not {0:?}"
    )]
    Architecture(String),
    #[error(
        "tensor {name}: mlx_lm's {class} class has no such parameter, so the model would not load there"
    )]
    Tensor { name: String, class: &'static str },
    #[error("config.json has no {key}, which mlx_lm's {class} class needs")]
    MissingKey { key: &'static str, class: &'static str },
    #[error("tensor {0} is missing, or stored in a way an MLX folder does not store it")]
    Missing(String),
    #[error(
        "tensor {0} is float64, which MLX does not store: pass --dtype bfloat16, float16 or float32"
    )]
    Float64(String),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{} is not a safetensors file mlx could have written: {reason}", path.display())]
    Header { path: std::path::PathBuf, reason: String },
    #[error("{} is not an MLX folder: its config.json has no \"quantization\"", .0.display())]
    NotMlx(std::path::PathBuf),
    /// A tensor source failed (a merge, a GGUF model); the message says where.
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Storage(#[from] amalgam_tensors::Error),
}

pub type Result<T> = std::result::Result<T, MlxError>;
