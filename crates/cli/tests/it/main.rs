//! Integration tests of the `amalgam` binary against the reference fixtures in
//! `tests/data` (copied from the project's shared fixtures by
//! `scripts/import-fixtures.sh`).

mod architectures;
mod card;
mod common;
mod compare;
mod errors;
mod gguf;
mod gguf_merge;
mod hub;
mod infer;
mod interrupt;
mod layers;
mod lora;
mod merge_quality;
mod methods;
mod methods_ties;
mod mlx;
mod resume;
mod search;
mod seed;
mod templates;
mod virtual_merge;
mod vocab;
