//! `amalgam merge CONFIG.yml OUT_DIR`: a drop-in for `mergekit-yaml`, with its flags
//! where they mean something here and a one-line note where they do not.

use std::path::PathBuf;
use std::time::Instant;

use amalgam_merge::run::Resume;
use amalgam_merge::to_gguf::GgufTypes;
use amalgam_merge::{MergeOptions, Summary};
use anyhow::{Context, bail};
use clap::Args;

use crate::mlx::MlxFlags;
use crate::progress::Bar;
use crate::shared::parse_kmb;

/// Merge models as a mergekit YAML config describes (same YAML, same result as
/// `mergekit-yaml`), streaming with bounded memory.
///
/// Models are local folders or hub ids (`org/name[@revision]`). Hub ids are read from the
/// local hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub) with
/// no network access; models not in the cache are downloaded into it (set HF_TOKEN for
/// gated models, HF_HUB_OFFLINE=1 to forbid downloads). The output is written beside
/// OUT_DIR and renamed into place only when complete.
///
/// Methods: every mergekit method — linear, slerp, nuslerp, multislerp, karcher,
/// passthrough, task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs,
/// breadcrumbs_ties, della, della_linear, sce, model_stock, nearswap, arcee_fusion, ram,
/// ramplus_tl — with mergekit's parameters and defaults. Inputs may be `model+adapter`
/// (a PEFT LoRA, applied as weights are read) and `.gguf` files; `tokenizer:` /
/// `tokenizer_source:` and `chat_template:` work as in mergekit.
///
/// Where mergekit has a bug, amalgam does the right thing: arcee_fusion and ramplus_tl
/// write the configured dtype (mergekit writes float32, its issue #604), per-layer config lists such
/// as `layer_types` follow the layers a slice config builds, and the donor of config.json
/// and the tokenizer does not depend on Python's set order.
#[derive(Args)]
#[command(after_help = "mergekit-yaml flags with no meaning here (--cuda, --lazy-unpickle, \
    --low-cpu-memory, --read-to-gpu, --multi-gpu, --gpu-rich, --async-write, --clone-tensors, \
    --safe-serialization, --trust-remote-code, ...) are accepted with a note, so mergekit and \
    LazyMergekit command lines run unchanged.")]
pub struct MergeArgs {
    /// The mergekit YAML config.
    config: PathBuf,
    /// The output folder (created; must be empty unless --force), or a `.gguf` file to merge
    /// straight into GGUF (see --quant). With --mlx, the folder is a quantized MLX model
    /// written straight from the merge: the same bytes as merging to a folder and running
    /// `amalgam quantize --mlx` on it, with the merge's card.
    out_dir: PathBuf,

    /// Measure the merge on this text before it is put in place: the model card gets a
    /// "Merge quality" section with the perplexity of the merge and of its base (the
    /// config's base_model, else its first model), as `amalgam perplexity` measures them
    /// (windows of 512 tokens, or the models' context when shorter). Folder outputs only.
    #[arg(long, value_name = "TEXT")]
    eval_file: Option<PathBuf>,
    /// With --eval-file: score at most this many windows.
    #[arg(long, value_name = "N", requires = "eval_file")]
    eval_chunks: Option<usize>,

    /// Bytes per output shard: a number with an optional K, M or B suffix (x1000,
    /// x1000000, x1000000000), as mergekit parses it. 0 writes a single file.
    #[arg(long, value_name = "SIZE", default_value = "5B", value_parser = parse_kmb, conflicts_with = "mlx")]
    out_shard_size: u64,
    /// Copy the base (or first) model's tokenizer files to the output [default].
    #[arg(long, overrides_with = "no_copy_tokenizer")]
    copy_tokenizer: bool,
    /// Do not copy tokenizer files.
    #[arg(long)]
    no_copy_tokenizer: bool,
    /// Write README.md (a model card) and mergekit_config.yml [default].
    #[arg(long, overrides_with = "no_write_model_card")]
    write_model_card: bool,
    /// Do not write the model card and config copy.
    #[arg(long)]
    no_write_model_card: bool,
    /// Allow inputs of different architectures.
    #[arg(long)]
    allow_crimes: bool,
    /// Seed for methods that draw random numbers; recorded in the model card.
    #[arg(long, value_name = "N", default_value_t = 0)]
    random_seed: u64,
    /// No progress bar (warnings and errors still print).
    #[arg(long)]
    quiet: bool,
    /// Worker threads [default: all cores].
    #[arg(long, short = 'j', visible_alias = "num-threads", value_name = "N")]
    threads: Option<usize>,
    /// Print the plan (layers, tensors, bytes read and written, shards) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Finish the merge an interrupted run (Ctrl-C, a crash, a lost machine) left beside
    /// OUT_DIR: the tensors it recorded as written are kept and the rest merged. Refused,
    /// naming what changed, unless the config, the inputs (sizes and times) and the
    /// options that shape the output are the same. Folder and .gguf outputs.
    #[arg(long)]
    resume: bool,
    /// Replace OUT_DIR if it exists and is not empty (only once the merge is complete).
    #[arg(long)]
    force: bool,
    /// When the inputs' vocabularies differ in size and the config has no tokenizer
    /// section: cut embeddings and the output head to the smallest vocabulary instead of
    /// failing (token ids past it lose their rows).
    #[arg(long)]
    unsafe_truncate_embeddings: bool,
    /// Treat unknown config keys and parameter names as errors, not warnings.
    #[arg(long)]
    strict: bool,
    /// Hub cache folder to use instead of the environment's.
    #[arg(long, value_name = "PATH")]
    transformers_cache: Option<PathBuf>,
    /// When OUT_DIR ends in .gguf: the llama.cpp quantization mixture (Q4_K_M, Q8_0, ...;
    /// see `amalgam quantize --help`), or `source`: every tensor keeps its input's type —
    /// a GGUF tensor a passthrough leaves unscaled (or scales by 1) is copied block for block (a lossless
    /// self-merge of a quantized GGUF), a scaled or merged one is quantized again to its
    /// input's type (one more rounding, for those tensors only). Default: `source` when
    /// every input is a GGUF, else the merge dtype, unquantized.
    #[arg(long, short = 'q', visible_alias = "outtype", value_name = "TYPE", value_parser = parse_gguf_types, conflicts_with = "mlx")]
    quant: Option<GgufTypes>,
    /// When writing GGUF: `tokenizer.ggml.pre`, overriding detection.
    #[arg(long, value_name = "NAME", conflicts_with = "mlx")]
    tokenizer_pre: Option<String>,
    /// When writing GGUF: split into llama.cpp-style parts (`OUT-00001-of-0000N.gguf`) of
    /// at most SIZE bytes of tensor data each.
    #[arg(long, value_name = "SIZE", value_parser = parse_kmb, conflicts_with = "mlx")]
    split_max_size: Option<u64>,

    #[command(flatten)]
    mlx: MlxFlags,

    #[command(flatten)]
    ignored: IgnoredFlags,
}

/// mergekit-yaml flags that have no meaning for amalgam.
#[derive(Args)]
struct IgnoredFlags {
    #[arg(long, hide = true)]
    lazy_unpickle: bool,
    #[arg(long, hide = true)]
    cuda: bool,
    #[arg(long, hide = true)]
    low_cpu_memory: bool,
    #[arg(long, hide = true)]
    read_to_gpu: bool,
    #[arg(long, hide = true)]
    multi_gpu: bool,
    #[arg(long, hide = true)]
    gpu_rich: bool,
    #[arg(long, hide = true)]
    async_write: bool,
    #[arg(long, hide = true)]
    clone_tensors: bool,
    #[arg(long, hide = true)]
    no_clone_tensors: bool,
    #[arg(long, hide = true)]
    safe_serialization: bool,
    #[arg(long, hide = true)]
    no_safe_serialization: bool,
    #[arg(long, hide = true)]
    trust_remote_code: bool,
    #[arg(long, hide = true)]
    no_trust_remote_code: bool,
    #[arg(long, hide = true, value_name = "DEVICE")]
    device: Option<String>,
    #[arg(long, hide = true, value_name = "N")]
    write_threads: Option<usize>,
    #[arg(long, hide = true, value_name = "PATH")]
    lora_merge_cache: Option<PathBuf>,
    #[arg(long, hide = true, value_name = "DTYPE")]
    lora_merge_dtype: Option<String>,
    #[arg(short = 'v', long = "verbose", hide = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl IgnoredFlags {
    /// One note per mergekit flag that was given but means nothing here.
    fn notes(&self) -> Vec<&'static str> {
        let cpu_only = "amalgam computes on the CPU and streams with bounded memory";
        let flags = [
            (
                self.lazy_unpickle,
                "--lazy-unpickle: amalgam never unpickles; it reads safetensors only",
            ),
            (self.cuda || self.gpu_rich || self.device.is_some(), cpu_only),
            (self.low_cpu_memory || self.read_to_gpu || self.multi_gpu, cpu_only),
            (
                self.async_write || self.write_threads.is_some(),
                "--async-write: amalgam always writes in parallel",
            ),
            (
                self.clone_tensors || self.no_clone_tensors,
                "--clone-tensors: not needed; repeated layers are written as copies",
            ),
            (self.safe_serialization, "--safe-serialization: output is always safetensors"),
            (
                self.no_safe_serialization,
                "--no-safe-serialization: amalgam writes safetensors only, never pickles",
            ),
            (
                self.trust_remote_code || self.no_trust_remote_code,
                "--trust-remote-code: amalgam runs no model code",
            ),
            (
                self.lora_merge_cache.is_some() || self.lora_merge_dtype.is_some(),
                "--lora-merge-*: not needed; LoRA adapters are applied as weights are read, \
                 with no merged copy on disk",
            ),
            (self.verbose > 0, "-v: amalgam prints warnings always and has no debug log"),
        ];
        let mut notes: Vec<&'static str> =
            flags.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        notes.dedup();
        notes
    }
}

/// `--quant`: `source`, or a llama.cpp mixture name.
fn parse_gguf_types(text: &str) -> Result<GgufTypes, String> {
    if text.eq_ignore_ascii_case("source") {
        return Ok(GgufTypes::Source);
    }
    crate::shared::parse_file_type(text).map(GgufTypes::Mixture)
}

/// Runs `amalgam merge`.
pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let bar = Bar::new(args.quiet || args.dry_run);
    for note in args.ignored.notes() {
        eprintln!("note: {note}");
    }
    if let Some(threads) = args.threads.filter(|n| *n > 0) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("starting worker threads")?;
    }
    let options = MergeOptions {
        out_shard_size: args.out_shard_size,
        copy_tokenizer: !args.no_copy_tokenizer,
        write_model_card: !args.no_write_model_card,
        allow_crimes: args.allow_crimes,
        random_seed: args.random_seed,
        strict: args.strict,
        force: args.force,
        dry_run: args.dry_run,
        resume: match args.resume {
            true => Resume::Continue,
            false => Resume::Record,
        },
        truncate_vocab: args.unsafe_truncate_embeddings,
        cache_dir: args.transformers_cache.clone(),
        quant: args.quant,
        tokenizer_pre: args.tokenizer_pre.clone(),
        split_max_size: args.split_max_size,
        detect_pre: Some(crate::pretok::detect_in),
        evaluate: None,
        writer: None,
    };
    let options = match args.mlx.mlx {
        true => {
            MergeOptions { writer: Some(crate::mlx::merge_writer(&args.mlx, None)?), ..options }
        }
        false => options,
    };
    if args.mlx.mlx && amalgam_merge::to_gguf::is_gguf_path(&args.out_dir) {
        bail!("--mlx writes a folder, not {}: name a folder", args.out_dir.display());
    }
    if args.mlx.mlx && (args.resume || args.eval_file.is_some()) {
        bail!(
            "--resume and --eval-file work on safetensors folder and GGUF merges; an --mlx \
             merge is written from the start and measured after (convert it back with \
             `amalgam convert`)"
        );
    }
    let options = match &args.eval_file {
        Some(_) if amalgam_merge::to_gguf::is_gguf_path(&args.out_dir) => bail!(
            "--eval-file writes a model card section, and a GGUF output has no card: measure \
             it with `amalgam perplexity {} -f TEXT`",
            args.out_dir.display()
        ),
        Some(_) if args.no_write_model_card => {
            bail!("--eval-file writes a model card section; drop --no-write-model-card")
        }
        Some(text) => MergeOptions {
            evaluate: Some(crate::infer::quality::evaluator(
                text.clone(),
                args.eval_chunks,
                bar.handle(),
            )),
            ..options
        },
        None => options,
    };
    let started = Instant::now();
    if !args.resume {
        crate::signals::remove_stale_partials(&args.out_dir);
    }
    let result = amalgam_merge::run(&args.config, &args.out_dir, &options, &bar);
    bar.finish();
    let summary = result?;
    if args.dry_run {
        print_plan(&args, &summary);
    } else if !args.quiet {
        let seconds = started.elapsed().as_secs_f64();
        // With --eval-file the time includes the measurement, so no rate.
        let rate = human_bytes((summary.bytes_written as f64 / seconds.max(1e-9)) as u64);
        let (what, rate) = match args.eval_file {
            Some(_) => ("merged and measured", String::new()),
            None => ("merged", format!(" ({rate}/s)")),
        };
        eprintln!(
            "{what} {} tensors ({}) into {} in {seconds:.1} s{rate}",
            summary.tensors,
            human_bytes(summary.bytes_written),
            args.out_dir.display(),
        );
    }
    Ok(())
}

fn print_plan(args: &MergeArgs, summary: &Summary) {
    println!("plan for {} -> {}", args.config.display(), args.out_dir.display());
    for (model, folder) in &summary.models {
        println!("  model    {model}  ({})", folder.display());
    }
    if let Some(layers) = summary.out_layers {
        println!("  layers   {layers}");
    }
    println!("  tensors  {}", summary.tensors);
    println!("  read     {}", human_bytes(summary.bytes_read));
    println!("  write    {}", human_bytes(summary.bytes_written));
    for (name, bytes, count) in &summary.shards {
        println!("  shard    {name}  {count} tensors, {}", human_bytes(*bytes));
    }
}

/// Bytes in decimal units, as disk sizes are quoted.
fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}
