//! `amalgam quantize MODEL OUT.gguf --quant TYPE`: a Hugging Face Llama model (folder or
//! hub id) to a GGUF file of any llama.cpp mixture, byte-identical to llama.cpp's
//! converter followed by `llama-quantize`.

use std::path::PathBuf;

use amalgam_gguf::FileType;
use amalgam_gguf::convert;
use amalgam_tensors::ModelFolder;
use anyhow::{Context, bail};
use clap::Args;

use crate::progress::Bar;
use crate::shared::{locate, parse_file_type};

/// Convert a Hugging Face model to GGUF, quantized with one of llama.cpp's mixtures.
///
/// MODEL is a model folder, a hub id (`org/name[@revision]`, found in the local hub
/// cache or downloaded), or a GGUF file (dequantized first, then quantized again). The bytes match llama.cpp's convert_hf_to_gguf.py followed by
/// llama-quantize (no importance matrix).
#[derive(Args)]
pub struct QuantizeArgs {
    /// The model: a Hugging Face folder, a hub id, or a .gguf file.
    model: String,
    /// The GGUF file to write.
    out: PathBuf,
    /// The mixture: F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q5_1, Q5_0, Q4_K_M,
    /// Q4_K_S, Q4_1, Q4_0, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K (case-insensitive).
    #[arg(long, short = 'q', visible_alias = "outtype", value_parser = parse_file_type)]
    quant: FileType,
    /// llama.cpp's pre-tokenizer name (`tokenizer.ggml.pre`), overriding detection.
    #[arg(long, value_name = "NAME")]
    tokenizer_pre: Option<String>,
    /// `general.name` [default: the model's folder or repository name].
    #[arg(long)]
    name: Option<String>,
    /// Split the output into llama.cpp-style parts (`OUT-00001-of-0000N.gguf`) of at most
    /// SIZE bytes of tensor data each (K, M, B or G suffixes, decimal).
    #[arg(long, value_name = "SIZE", value_parser = crate::shared::parse_kmb)]
    split_max_size: Option<u64>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `amalgam quantize`.
pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let bar = Bar::new(args.quiet);
    if args.out.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.out.display());
    }
    crate::signals::remove_stale_partials(&args.out);
    let folder_path = locate(&args.model, &bar)?;
    if folder_path.is_file() {
        return requantize(&args, &folder_path, &bar);
    }
    let folder = ModelFolder::open(&folder_path)?;
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.model));
    let pre = args.tokenizer_pre.clone().or_else(|| crate::pretok::detect_in(&folder_path));
    let (metadata, plan) = convert::prepare(&folder, args.quant, &name, pre.as_deref())?;
    if let Some((pre, true)) = &plan.pre {
        bar.warn_line(&format!(
            "tokenizer.ggml.pre = {pre:?} was guessed from the pre-tokenizer definition; pass \
             --tokenizer-pre to set it"
        ));
    }
    bar.start_bytes("writing", plan.bytes);
    let progress = convert::Progress { bytes: &|n| bar.add(n), tensor_done: &|| {} };
    let result = convert::write(
        &args.out,
        &metadata,
        &plan.tensors,
        &folder,
        &progress,
        args.split_max_size,
    );
    bar.finish();
    let files = result.with_context(|| format!("writing {}", args.out.display()))?;
    if !args.quiet {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let (count, quant) = (plan.tensors.len(), args.quant);
        eprintln!("wrote {} ({count} tensors, {quant}, {} bytes)", names.join(", "), plan.bytes);
    }
    Ok(())
}

/// A GGUF input: its quantization is undone (dequantized to f32) and the model written
/// again in the requested mixture, through the merge engine's GGUF path.
fn requantize(args: &QuantizeArgs, gguf: &std::path::Path, bar: &Bar) -> anyhow::Result<()> {
    let config = crate::shared::single_model_config(gguf, "float32")?;
    let options = amalgam_merge::MergeOptions {
        quant: Some(amalgam_merge::to_gguf::GgufTypes::Mixture(args.quant)),
        tokenizer_pre: args.tokenizer_pre.clone(),
        split_max_size: args.split_max_size,
        ..crate::shared::single_model_options(args.force)
    };
    let result = amalgam_merge::run_config(&config, "quantize", &args.out, &options, bar);
    bar.finish();
    let summary = result?;
    if !args.quiet {
        eprintln!("wrote {} ({} tensors, {})", args.out.display(), summary.tensors, args.quant);
    }
    Ok(())
}

/// The last path component of a folder or hub id, without a revision.
fn default_name(model: &str) -> String {
    let path = model.split('@').next().unwrap_or(model).trim_end_matches('/');
    path.rsplit('/').next().unwrap_or(path).to_owned()
}
