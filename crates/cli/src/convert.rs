//! `amalgam convert MODEL.gguf OUT_DIR`: a GGUF model back to a Hugging Face folder —
//! dequantized to float32, float16 or bfloat16, Q/K rows put back in HF order, with
//! `config.json`, `generation_config.json`, `tokenizer.json` and `tokenizer_config.json`
//! (chat template included) rebuilt from the metadata. An MLX folder is dequantized as
//! `mlx_lm.convert -d` does (`crate::mlx`).

use std::path::PathBuf;

use amalgam_merge::MergeOptions;
use clap::Args;

use crate::progress::Bar;
use crate::shared::{single_model_config, single_model_options};

/// Convert a GGUF model to a Hugging Face model folder (safetensors), or dequantize an MLX
/// folder as mlx_lm.convert -d does.
#[derive(Args)]
pub struct ConvertArgs {
    /// The GGUF file (a Llama-architecture model), or a quantized MLX folder.
    model: PathBuf,
    /// The folder to write.
    out_dir: PathBuf,
    /// Element type of the weights: float32, float16 or bfloat16.
    #[arg(long, default_value = "float32", value_parser = ["float32", "float16", "bfloat16", "f32", "f16", "bf16"])]
    dtype: String,
    /// Bytes per output shard (K/M/B suffixes as for merge).
    #[arg(long, value_name = "SIZE", default_value = "5B", value_parser = crate::shared::parse_kmb)]
    out_shard_size: u64,
    /// Replace OUT_DIR if it is not empty.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `amalgam convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    if args.model.is_dir() {
        if crate::shared::occupied(&args.out_dir) && !args.force {
            anyhow::bail!("{} exists; pass --force to replace it", args.out_dir.display());
        }
        let bar = Bar::new(args.quiet);
        crate::mlx::dequantize(&args.model, &args.out_dir, args.force, &bar)?;
        if !args.quiet {
            eprintln!("wrote {}", args.out_dir.display());
        }
        return Ok(());
    }
    let dtype = match args.dtype.as_str() {
        "f32" => "float32",
        "f16" => "float16",
        "bf16" => "bfloat16",
        other => other,
    };
    // A GGUF file converts as a passthrough "merge" of itself: one code path for reading,
    // streaming and writing, with the tokenizer rebuilt from the GGUF metadata.
    let config = single_model_config(&args.model, dtype)?;
    let options =
        MergeOptions { out_shard_size: args.out_shard_size, ..single_model_options(args.force) };
    let bar = Bar::new(args.quiet);
    crate::signals::remove_stale_partials(&args.out_dir);
    let result = amalgam_merge::run_config(&config, "convert", &args.out_dir, &options, &bar);
    bar.finish();
    let summary = result?;
    if !args.quiet {
        eprintln!("wrote {} ({} tensors, {dtype})", args.out_dir.display(), summary.tensors);
    }
    Ok(())
}
