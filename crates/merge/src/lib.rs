//! mergekit-compatible merging: the YAML config, architectures as data, a planner that
//! turns both into per-tensor work, the merge methods, and a streaming executor that
//! writes Hugging Face safetensors shards with bounded memory.

// Library code returns errors on bad input; it does not panic (tests may).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod arch;
pub mod card;
pub mod chat_template;
mod checkpoint;
pub mod config;
pub mod error;
pub mod execute;
pub mod external;
pub mod layer_config;
pub mod layer_list;
pub mod lora;
pub mod methods;
pub mod model_ref;
pub mod opened;
pub mod output;
pub mod params;
pub mod plan;
pub mod quality;
pub mod report;
pub mod resolve;
pub mod run;
pub mod source;
mod staging;
mod suggest;
pub mod tensor_plan;
pub mod to_gguf;
mod tokenizers;
pub mod vocab;

pub use config::{Diagnostics, MergeConfig};
pub use error::{MergeError, Result};
pub use model_ref::ModelRef;
pub use run::{MergeOptions, Reporter, Summary, run, run_config};
