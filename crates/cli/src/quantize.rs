//! `amalgam quantize MODEL OUT.gguf --quant TYPE`: a Hugging Face Llama model (folder or
//! hub id) to a GGUF file of any llama.cpp mixture, byte-identical to llama.cpp's
//! converter followed by `llama-quantize`; with `--mlx`, to an MLX folder
//! (`mlx`).

use std::path::PathBuf;

use amalgam_gguf::FileType;
use amalgam_gguf::convert;
use amalgam_tensors::ModelFolder;
use anyhow::{Context, bail};
use clap::Args;

use crate::progress::Bar;
use crate::shared::{locate, parse_file_type};

/// Convert a Hugging Face model to GGUF, quantized with one of llama.cpp's mixtures, or
/// with --mlx to a quantized MLX folder.
///
/// MODEL is a model folder, a hub id (`org/name[@revision]`, found in the local hub
/// cache or downloaded), or a GGUF file (dequantized first, then quantized again). The bytes match llama.cpp's convert_hf_to_gguf.py followed by
/// llama-quantize (no importance matrix). With --mlx, OUT is a folder, and its weights,
/// index and config.json are the bytes mlx_lm.convert -q writes (mlx 0.32, Llama models).
#[derive(Args)]
pub struct QuantizeArgs {
    /// The model: a Hugging Face folder, a hub id, or a .gguf file.
    model: String,
    /// The GGUF file to write (a folder with --mlx).
    out: PathBuf,
    /// The mixture: F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q5_1, Q5_0, Q4_K_M,
    /// Q4_K_S, Q4_1, Q4_0, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K (case-insensitive).
    #[arg(long, short = 'q', visible_alias = "outtype", value_parser = parse_file_type, required_unless_present = "mlx", conflicts_with = "mlx")]
    quant: Option<FileType>,
    /// Write an MLX folder, as mlx_lm.convert -q does, instead of GGUF.
    #[arg(long)]
    mlx: bool,
    /// MLX: bits per weight (2, 3, 4, 5, 6 or 8).
    #[arg(long, default_value_t = 4, requires = "mlx")]
    q_bits: u32,
    /// MLX: weights per scale and bias (32, 64 or 128) [default: 64].
    #[arg(long, requires = "mlx")]
    q_group_size: Option<usize>,
    /// MLX: the quantization mode (affine).
    #[arg(long, default_value = "affine", requires = "mlx")]
    q_mode: String,
    /// MLX: mlx_lm's mixed-precision recipe: mixed_2_6, mixed_3_4, mixed_3_6 or mixed_4_6.
    #[arg(long, value_name = "RECIPE", requires = "mlx")]
    quant_predicate: Option<String>,
    /// MLX: the dtype of everything not quantized (scales and biases included): float16,
    /// bfloat16 or float32 [default: the config's torch_dtype, else as stored].
    #[arg(long, requires = "mlx")]
    dtype: Option<String>,
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
    /// Replace OUT if it exists (for --mlx, a folder that is not empty).
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `amalgam quantize`.
pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let bar = Bar::new(args.quiet);
    let taken = if args.mlx { crate::shared::occupied(&args.out) } else { args.out.exists() };
    if taken && !args.force {
        bail!("{} exists; pass --force to replace it", args.out.display());
    }
    crate::signals::remove_stale_partials(&args.out);
    let folder_path = locate(&args.model, &bar)?;
    let Some(quant) = args.quant else {
        if folder_path.is_file() {
            bail!(
                "--mlx takes a Hugging Face folder or hub id; convert {} first",
                folder_path.display()
            );
        }
        let mlx = crate::mlx::MlxArgs {
            bits: args.q_bits,
            group_size: args.q_group_size,
            mode: &args.q_mode,
            recipe: args.quant_predicate.as_deref(),
            dtype: args.dtype.as_deref(),
        };
        crate::mlx::run(&args.model, &folder_path, &args.out, &mlx, &bar)?;
        if !args.quiet {
            eprintln!("wrote {}", args.out.display());
        }
        return Ok(());
    };
    if folder_path.is_file() {
        return requantize(&args, quant, &folder_path, &bar);
    }
    let folder = ModelFolder::open(&folder_path)?;
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.model));
    let pre = args.tokenizer_pre.clone().or_else(|| crate::pretok::detect_in(&folder_path));
    let (metadata, plan) = convert::prepare(&folder, quant, &name, pre.as_deref())?;
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
        let count = plan.tensors.len();
        eprintln!("wrote {} ({count} tensors, {quant}, {} bytes)", names.join(", "), plan.bytes);
    }
    Ok(())
}

/// A GGUF input: its quantization is undone (dequantized to f32) and the model written
/// again in the requested mixture, through the merge engine's GGUF path.
fn requantize(
    args: &QuantizeArgs,
    quant: FileType,
    gguf: &std::path::Path,
    bar: &Bar,
) -> anyhow::Result<()> {
    let config = crate::shared::single_model_config(gguf, "float32")?;
    let options = amalgam_merge::MergeOptions {
        quant: Some(amalgam_merge::to_gguf::GgufTypes::Mixture(quant)),
        tokenizer_pre: args.tokenizer_pre.clone(),
        split_max_size: args.split_max_size,
        ..crate::shared::single_model_options(args.force)
    };
    let result = amalgam_merge::run_config(&config, "quantize", &args.out, &options, bar);
    bar.finish();
    let summary = result?;
    if !args.quiet {
        eprintln!("wrote {} ({} tensors, {quant})", args.out.display(), summary.tensors);
    }
    Ok(())
}

/// The last path component of a folder or hub id, without a revision.
fn default_name(model: &str) -> String {
    let path = model.split('@').next().unwrap_or(model).trim_end_matches('/');
    path.rsplit('/').next().unwrap_or(path).to_owned()
}
