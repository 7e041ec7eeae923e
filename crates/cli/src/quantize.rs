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

use crate::mlx::MlxFlags;
use crate::progress::Bar;
use crate::shared::{locate, parse_file_type};

/// Convert a Hugging Face model to GGUF, quantized with one of llama.cpp's mixtures, or
/// with --mlx to a quantized MLX folder.
///
/// MODEL is a model folder, a hub id (`org/name[@revision]`, found in the local hub
/// cache or downloaded), or a GGUF file (dequantized first, then quantized again). The bytes match llama.cpp's convert_hf_to_gguf.py followed by
/// llama-quantize (no importance matrix). With --mlx, OUT is a folder, and its weights,
/// index and config.json are the bytes mlx_lm.convert -q writes (mlx 0.32; llama,
/// mistral, qwen2, qwen3, gemma, gemma2, gemma3_text and phi3 models; a GGUF input is
/// dequantized to its float type first).
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
    #[command(flatten)]
    mlx: MlxFlags,
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
    let taken = if args.mlx.mlx { crate::shared::occupied(&args.out) } else { args.out.exists() };
    if taken && !args.force {
        bail!("{} exists; pass --force to replace it", args.out.display());
    }
    crate::signals::remove_stale_partials(&args.out);
    let folder_path = locate(&args.model, &bar)?;
    let Some(quant) = args.quant else {
        if folder_path.is_file() {
            return gguf_to_mlx(&args, &folder_path, &bar);
        }
        crate::mlx::run(&args.model, &folder_path, &args.out, &args.mlx, args.force, &bar)?;
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
    let options = amalgam_merge::MergeOptions {
        quant: Some(amalgam_merge::to_gguf::GgufTypes::Mixture(quant)),
        tokenizer_pre: args.tokenizer_pre.clone(),
        split_max_size: args.split_max_size,
        ..crate::shared::single_model_options(args.force)
    };
    rewrite(args, gguf, "float32", &options, &quant.to_string(), bar)
}

/// A GGUF input to `--mlx`: dequantized (to `--dtype`, else the GGUF's float type) and
/// quantized again as MLX as the tensors stream through the merge engine, the same bytes
/// as `amalgam convert` followed by `quantize --mlx`.
fn gguf_to_mlx(args: &QuantizeArgs, gguf: &std::path::Path, bar: &Bar) -> anyhow::Result<()> {
    let dtype = match &args.mlx.dtype {
        Some(name) => name.clone(),
        None => gguf_float_type(gguf)?.to_owned(),
    };
    let options = amalgam_merge::MergeOptions {
        writer: Some(crate::mlx::merge_writer(&args.mlx, Some(args.model.clone()))?),
        ..crate::shared::single_model_options(args.force)
    };
    rewrite(args, gguf, &dtype, &options, &format!("MLX from {dtype}"), bar)
}

/// Runs the GGUF file `gguf` through the merge engine as a passthrough of itself in
/// `dtype`, written as `options` say; `what` names the output in the closing line.
fn rewrite(
    args: &QuantizeArgs,
    gguf: &std::path::Path,
    dtype: &str,
    options: &amalgam_merge::MergeOptions,
    what: &str,
    bar: &Bar,
) -> anyhow::Result<()> {
    let config = crate::shared::single_model_config(gguf, dtype)?;
    let result = amalgam_merge::run_config(&config, "quantize", &args.out, options, bar);
    bar.finish();
    let summary = result?;
    if !args.quiet {
        eprintln!("wrote {} ({} tensors, {what})", args.out.display(), summary.tensors);
    }
    Ok(())
}

/// The float type a GGUF's weights come back as: bfloat16 or float32 when its file type
/// says so, else float16 (what quantized files were made from, and MLX's usual type).
fn gguf_float_type(gguf: &std::path::Path) -> anyhow::Result<&'static str> {
    let file = amalgam_gguf::GgufFile::open(gguf)?;
    let file_type = file.header.get("general.file_type").and_then(|v| v.as_u64());
    Ok(match file_type {
        Some(0) => "float32",
        Some(32) => "bfloat16",
        _ => "float16",
    })
}

/// The last path component of a folder or hub id, without a revision.
fn default_name(model: &str) -> String {
    let path = model.split('@').next().unwrap_or(model).trim_end_matches('/');
    path.rsplit('/').next().unwrap_or(path).to_owned()
}
