//! amalgam's CPU inference engine for the Llama family (llama, mistral, qwen2, qwen3):
//! a model is a list of layers whose weights are views into memory-mapped files, each
//! layer with its own KV cache, so the same engine runs a model as stored or a layer map
//! that repeats layers. Kernels, tokenizer, chat template, sampling, perplexity, the
//! comparison with a reference (KL divergence) and layer redundancy live here; merge
//! configs do not.

// Library code returns errors on bad input; it does not panic (tests may).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod assets;
pub mod compare;
pub mod config;
pub mod divergence;
pub mod error;
pub mod forward;
pub mod generate;
pub mod kernels;
pub mod kv;
pub mod layer_map;
pub mod logits_file;
pub mod machine;
pub mod model;
pub mod ops;
pub mod perplexity;
pub mod pool;
pub mod redundancy;
pub mod rope;
pub mod sampling;
pub mod source;
pub mod template;
pub mod tokenizer;

pub use assets::Assets;
pub use config::{Arch, Config};
pub use error::{Error, Result};
pub use forward::{Logits, Session};
pub use kv::KvType;
pub use layer_map::{LayerMap, LayerRef, TensorRef};
pub use model::{Layer, Matrix, Model};
pub use pool::Pool;
pub use sampling::{Sampler, SamplerConfig};
pub use source::{RopeStyle, TensorSource};
pub use tokenizer::Tokenizer;
