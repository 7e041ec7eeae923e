//! What `generate`, `chat` and `perplexity` share: the MODEL argument and the engine
//! flags (MODEL itself is opened by `store`), threads, the sampling flags over
//! `generation_config.json`'s defaults.

pub mod chat;
pub mod compare;
pub mod generate;
mod heatmap;
pub mod layers;
mod layout;
pub mod perplexity;
pub mod quality;
pub mod search;
mod search_log;
pub mod store;

pub use store::Store;

use amalgam_llama::assets::GenerationDefaults;
use amalgam_llama::{KvType, Model, SamplerConfig};
use amalgam_llama::{machine, pool};
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

/// The model and how to run it.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// A Hugging Face model folder (safetensors), a .gguf file (the first part of a split
    /// one opens them all), a hub id (org/name[@revision]: from the local hub cache, else
    /// downloaded into it as `amalgam merge` does; HF_HUB_OFFLINE=1 forbids that), or a
    /// merge config (.yml). A passthrough config runs virtually: each output layer reuses
    /// its source layer's stored weights (with its own KV cache), so nothing is written
    /// and the weights take the memory of the sources, and `scale` multiplies a matrix's
    /// products instead of its rounded weights. Other methods are merged into memory
    /// first.
    #[arg(value_name = "MODEL")]
    pub model: String,

    /// Context size in tokens [default: the model's trained context, at most 4096].
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub ctx_size: Option<usize>,

    /// Worker threads [default: the number of physical cores].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,

    /// Element type of the KV cache (llama.cpp's default is f16).
    #[arg(long, value_enum, default_value = "f16", value_name = "TYPE")]
    pub kv_type: KvTypeArg,

    /// RoPE base frequency, replacing the model's (to stretch the context).
    #[arg(long, value_name = "THETA")]
    pub rope_theta: Option<f32>,

    /// Prompt tokens per forward pass.
    #[arg(short = 'b', long, default_value_t = 512, value_name = "N")]
    pub batch: usize,
}

/// `--kv-type` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KvTypeArg {
    F16,
    F32,
}

impl From<KvTypeArg> for KvType {
    fn from(k: KvTypeArg) -> KvType {
        match k {
            KvTypeArg::F16 => KvType::F16,
            KvTypeArg::F32 => KvType::F32,
        }
    }
}

/// A loaded model and the settings it runs with.
pub struct Engine<'s> {
    pub model: Model<'s>,
    pub ctx: usize,
    pub kv: KvType,
    pub batch: usize,
}

impl<'s> Engine<'s> {
    /// Loads the model of `store` with the flags' overrides and starts the threads.
    pub fn load(store: &'s Store, args: &EngineArgs) -> Result<Engine<'s>> {
        pool::init(args.threads.filter(|&n| n > 0).unwrap_or_else(machine::physical_cores));
        let model = store.load(|config| {
            if let Some(theta) = args.rope_theta {
                config.rope_theta = theta;
            }
        })?;
        let ctx = args.ctx_size.unwrap_or(model.config.max_positions.min(4096));
        if ctx == 0 {
            bail!("--ctx-size must be at least 1");
        }
        Ok(Engine { model, ctx, kv: args.kv_type.into(), batch: args.batch.max(1) })
    }

    /// Prints what runs: one line, and the notes that go with it.
    pub fn announce(&self, store: &Store) {
        let (kind, notes) = store.describe(&self.model);
        let c = &self.model.config;
        let kv_bytes = self.model.layers.len() * 2 * self.ctx * c.kv_dim() * self.kv.size();
        eprintln!(
            "{}: {} {kind}, {:.0} MiB of weights mapped, context {} ({:.0} MiB of KV cache), \
             {} threads, {} kernels",
            store.path().display(),
            c.arch.name(),
            self.model.weight_bytes() as f64 / 1048576.0,
            self.ctx,
            kv_bytes as f64 / 1048576.0,
            pool::global().threads(),
            amalgam_llama::kernels::Kernels::best().name
        );
        for note in notes {
            eprintln!("note: {note}");
        }
    }
}

/// Sampling flags, each overriding `generation_config.json`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy [default: generation_config.json's when it
    /// samples (do_sample), else 0]. The seed model's card uses 0.7.
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Keep the K most likely tokens (0: all) [default: generation_config.json's, else 50].
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Keep the most likely tokens up to probability P [default: generation_config.json's, else 1].
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than P times the most likely one [default: 0].
    #[arg(long, value_name = "P")]
    pub min_p: Option<f32>,
    /// Divide the logits of tokens already in the context by this (1: off).
    #[arg(long, visible_alias = "repetition-penalty", value_name = "X")]
    pub repeat_penalty: Option<f32>,
    /// Random seed; the same seed gives the same text at any thread count [default: random].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The settings: flags, else `defaults`, else transformers' defaults.
    pub fn config(&self, defaults: &GenerationDefaults) -> SamplerConfig {
        let sampling = defaults.do_sample.unwrap_or(false);
        let temperature = self.temperature.unwrap_or(if sampling {
            defaults.temperature.unwrap_or(1.0)
        } else {
            0.0
        });
        SamplerConfig {
            temperature,
            top_k: self.top_k.or(defaults.top_k).unwrap_or(50),
            top_p: self.top_p.or(defaults.top_p).unwrap_or(1.0),
            min_p: self.min_p.or(defaults.min_p).unwrap_or(0.0),
            repetition_penalty: self.repeat_penalty.or(defaults.repetition_penalty).unwrap_or(1.0),
            seed: self.seed.unwrap_or_else(random_seed),
        }
    }
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (t as u64) ^ u64::from(std::process::id()).rotate_left(32)
}
