//! MLX folders: `amalgam quantize MODEL OUT_DIR --mlx`, a Hugging Face model folder to the
//! MLX folder `mlx_lm.convert -q` writes (weights, index and config byte-equal to it, the
//! tokenizer files copied, an mlx-community style card); the merge writer behind `amalgam
//! merge … --mlx` and a GGUF input to `quantize --mlx` (the merged or dequantized tensors
//! quantized as they are computed); and `amalgam convert MLX_DIR OUT_DIR`, such a folder
//! dequantized as `mlx_lm.convert -d` does.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use amalgam_merge::card::Library;
use amalgam_merge::external::{Merged, Writer, WrittenFile};
use amalgam_mlx::convert::{Options, Plan, plan};
use amalgam_mlx::pyjson::dumps;
use amalgam_mlx::{Method, MlxError, Recipe, Source};
use amalgam_tensors::folder::read_json;
use amalgam_tensors::{DType, ModelFolder, partial};
use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value};

use crate::progress::Bar;

/// The MLX flags, named as mlx_lm.convert names them.
#[derive(Args, Clone, Debug)]
pub struct MlxFlags {
    /// Write a quantized MLX folder, as mlx_lm.convert -q writes it (weights, index and
    /// config.json the same bytes; mlx 0.32; model types llama, mistral, qwen2, qwen3,
    /// gemma, gemma2, gemma3_text and phi3).
    #[arg(long)]
    pub mlx: bool,
    /// MLX: bits per weight: 2, 3, 4, 5, 6 or 8 for affine [default: 4]; the block modes
    /// have theirs (mxfp4 and nvfp4 4, mxfp8 8).
    #[arg(long, requires = "mlx")]
    pub q_bits: Option<u32>,
    /// MLX: weights per scale: 32, 64 or 128 for affine [default: 64]; mxfp4 and mxfp8
    /// take 32, nvfp4 16.
    #[arg(long, requires = "mlx")]
    pub q_group_size: Option<usize>,
    /// MLX: the quantization mode: affine (a scale and bias per group), or the
    /// floating-point block modes mxfp4, nvfp4 (FP4 codes) and mxfp8 (FP8 codes), each with
    /// a one-byte scale per group.
    #[arg(long, default_value = "affine", requires = "mlx")]
    pub q_mode: String,
    /// MLX: mlx_lm's mixed-precision recipe: mixed_2_6, mixed_3_4, mixed_3_6 or mixed_4_6.
    #[arg(long, value_name = "RECIPE", requires = "mlx")]
    pub quant_predicate: Option<String>,
    /// MLX: the dtype of everything not quantized (scales and biases included): float16,
    /// bfloat16 or float32 [default: the config's torch_dtype, else as stored; for a GGUF
    /// input, bfloat16 or float32 if its weights are, else float16].
    #[arg(long, requires = "mlx")]
    pub dtype: Option<String>,
}

/// The files beside the weights mlx_lm's output carries, copied when the input has them
/// (`tokenizer_config.json` is written by [`tokenizer_config`]).
const COPIED: [&str; 4] =
    ["tokenizer.json", "tokenizer.model", "chat_template.jinja", "generation_config.json"];

/// The flags checked and turned into the converter's options.
fn options(flags: &MlxFlags) -> anyhow::Result<Options> {
    let dtype = flags.dtype.as_deref().map(parse_dtype).transpose()?;
    let method = Method::new(&flags.q_mode, flags.q_bits, flags.q_group_size)?;
    let recipe = flags.quant_predicate.as_deref().map(Recipe::named).transpose()?;
    if recipe.is_some() && !matches!(method, Method::Affine(_)) {
        Err(MlxError::RecipeMode)?;
    }
    Ok(Options { method, group_size: flags.q_group_size, recipe, dtype })
}

/// A `--dtype` name.
fn parse_dtype(name: &str) -> anyhow::Result<DType> {
    DType::from_torch_name(name)
        .filter(|d| *d != DType::F64)
        .with_context(|| format!("--dtype {name}: use float16, bfloat16 or float32"))
}

/// How the weights are quantized, in a few words (for the cards): the checked `options`,
/// and the recipe's name as given.
fn described(options: &Options, recipe: Option<&str>) -> String {
    match (recipe, options.method) {
        (Some(r), _) => format!("the {r} recipe"),
        (None, Method::Fp(fp)) => format!("{} quantization", fp.name()),
        (None, m) => format!("{}-bit affine quantization, groups of {}", m.bits(), m.group_size()),
    }
}

/// The model's `generation_config.json` in `dir`, if it has one.
fn generation(dir: &Path) -> Option<Map<String, Value>> {
    read_json(&dir.join("generation_config.json")).ok()?.as_object().cloned()
}

/// Writes `folder_path`'s model to `out` as MLX.
pub fn run(
    model: &str,
    folder_path: &Path,
    out: &Path,
    flags: &MlxFlags,
    force: bool,
    bar: &Bar,
) -> anyhow::Result<()> {
    let options = options(flags)?;
    let quantization = described(&options, flags.quant_predicate.as_deref());
    let folder = ModelFolder::open(folder_path)?;
    let plan = plan(&folder, folder.config(), generation(folder_path).as_ref(), &options)?;
    bar.start_bytes("quantizing", plan.bytes as u64);
    let written = stage(out, force, |staging| {
        write_model(&plan, &folder, staging, &|n| bar.add(n as u64))?;
        beside(folder_path, staging)?;
        fs::write(staging.join("README.md"), card(model, out, &quantization))?;
        Ok(())
    });
    bar.finish();
    written
}

/// A merge's writer for `amalgam merge … --mlx` (and a GGUF input to `quantize --mlx`,
/// run as a passthrough of itself): the merged tensors quantized as they are computed.
/// When the merge writes no card, `card_model` names the model for an mlx-community card.
pub fn merge_writer(flags: &MlxFlags, card_model: Option<String>) -> anyhow::Result<Writer> {
    let options = options(flags)?;
    let quantization = described(&options, flags.quant_predicate.as_deref());
    Ok(Writer(Arc::new(move |merged: &Merged| {
        write_merge(merged, &options, &quantization, card_model.as_deref())
            .map_err(|e| format!("{e:#}"))
    })))
}

/// [`merge_writer`]'s work.
fn write_merge(
    merged: &Merged,
    options: &Options,
    quantization: &str,
    card_model: Option<&str>,
) -> anyhow::Result<Vec<WrittenFile>> {
    let source = MergedSource(merged);
    if merged.dry_run {
        return Ok(files(&plan(&source, merged.config, None, options)?));
    }
    stage(merged.out, merged.force, |staging| {
        // What a folder merge writes beside its weights, made first in a scratch folder
        // and then carried over as quantizing that folder would.
        let made = staging.join(".merged-files");
        fs::create_dir(&made).with_context(|| format!("creating {}", made.display()))?;
        merged.write_files(&made, Library::Mlx { quantization })?;
        let plan = plan(&source, merged.config, generation(&made).as_ref(), options)?;
        let reporter = merged.reporter;
        reporter.begin(files(&plan).iter().map(|f| f.tensors).sum(), plan.bytes as u64);
        write_model(&plan, &source, staging, &|n| {
            reporter.advance(n as u64);
            reporter.tensor_done();
        })?;
        beside(&made, staging)?;
        copy_beside(&made, staging, &["README.md", "mergekit_config.yml"])?;
        if let Some(model) = card_model.filter(|_| !made.join("README.md").is_file()) {
            fs::write(staging.join("README.md"), card(model, merged.out, quantization))?;
        }
        fs::remove_dir_all(&made).with_context(|| format!("removing {}", made.display()))?;
        Ok(files(&plan))
    })
}

/// A merge as the converter's tensor source.
struct MergedSource<'a>(&'a Merged<'a>);

impl Source for MergedSource<'_> {
    fn names(&self) -> Vec<String> {
        self.0.names()
    }

    fn info(&self, name: &str) -> amalgam_mlx::Result<Option<(DType, Vec<usize>)>> {
        Ok(self.0.info(name).map(|(dtype, shape)| (dtype, shape.to_vec())))
    }

    fn read(&self, name: &str, out: &mut [f32]) -> amalgam_mlx::Result<()> {
        self.0.read(name, out).map_err(|e| MlxError::Source(e.to_string()))
    }
}

/// The weight files a plan writes.
fn files(plan: &Plan) -> Vec<WrittenFile> {
    let file = |(name, bytes, tensors)| WrittenFile { name, bytes, tensors };
    plan.files().into_iter().map(file).collect()
}

/// The weights, the index and `config.json` of `plan` into `dir`.
fn write_model(
    plan: &Plan,
    source: &dyn Source,
    dir: &Path,
    progress: &dyn Fn(usize),
) -> anyhow::Result<()> {
    plan.write(source, dir, progress)?;
    fs::write(dir.join("model.safetensors.index.json"), &plan.index)?;
    fs::write(dir.join("config.json"), dumps(&Value::Object(plan.config.clone())))?;
    Ok(())
}

/// The tokenizer files and generation config of the model in `from`, into `to` as
/// mlx_lm writes them.
fn beside(from: &Path, to: &Path) -> anyhow::Result<()> {
    copy_beside(from, to, &COPIED)?;
    tokenizer_config(from, to)
}

/// `amalgam convert MLX_DIR OUT_DIR`: the folder dequantized, its other files copied.
pub fn dequantize(dir: &Path, out: &Path, force: bool, bar: &Bar) -> anyhow::Result<()> {
    let plan = amalgam_mlx::dequantize::plan(dir)?;
    bar.start_bytes("dequantizing", plan.bytes as u64);
    let written = stage(out, force, |staging| {
        plan.write(staging, &|n| bar.add(n as u64))?;
        fs::write(staging.join("model.safetensors.index.json"), &plan.index)?;
        fs::write(staging.join("config.json"), dumps(&Value::Object(plan.config.clone())))?;
        copy_beside(dir, staging, &COPIED)?;
        copy_beside(dir, staging, &["tokenizer_config.json", "special_tokens_map.json"])?;
        // The card mlx_lm writes for a local folder.
        let card = "---\nlanguage: en\nlibrary_name: mlx\npipeline_tag: text-generation\ntags:\n- mlx\n---\n";
        fs::write(staging.join("README.md"), card)?;
        Ok(())
    });
    bar.finish();
    written
}

/// Writes `out` through a staging folder beside it (`.NAME.amalgam-partial-PID`, which a
/// later run removes if this one is killed), renamed into place when `fill` has filled
/// it, removed if `fill` fails. An `out` that is there by then is replaced only with
/// `force`.
fn stage<T>(
    out: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let staging = partial::sibling(out, "partial");
    let _tracked = partial::track(&staging);
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let written = fill(&staging).and_then(|value| {
        if crate::shared::occupied(out) && !force {
            bail!("{} appeared while writing; pass --force to replace it", out.display());
        }
        if out.exists() {
            fs::remove_dir_all(out).with_context(|| format!("replacing {}", out.display()))?;
        }
        partial::commit(&staging, out)?;
        Ok(value)
    });
    if written.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    written
}

/// Copies the files `names` from `from` where it has them.
fn copy_beside(from: &Path, to: &Path, names: &[&str]) -> anyhow::Result<()> {
    for &name in names {
        let file = from.join(name);
        if file.is_file() {
            fs::copy(&file, to.join(name))
                .with_context(|| format!("copying {}", file.display()))?;
        }
    }
    Ok(())
}

/// `tokenizer_config.json` as transformers 5 saves it for mlx_lm: the chat template moved
/// to `chat_template.jinja` (unless the input has one already); the other keys kept.
fn tokenizer_config(input: &Path, out: &Path) -> anyhow::Result<()> {
    let path = input.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(());
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: serde_json::Map<String, Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    if let Some(Value::String(template)) = config.get("chat_template") {
        if !input.join("chat_template.jinja").is_file() {
            fs::write(out.join("chat_template.jinja"), template)?;
        }
        config.remove("chat_template");
    }
    fs::write(out.join("tokenizer_config.json"), serde_json::to_string_pretty(&config)? + "\n")?;
    Ok(())
}

/// The model card, in the mlx-community style.
fn card(model: &str, out: &Path, quantization: &str) -> String {
    let name = out.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    format!(
        "---\nlibrary_name: mlx\ntags:\n- mlx\nbase_model: {model}\npipeline_tag: text-generation\n---\n\n\
         # {name}\n\nThis model was converted to MLX format from `{model}` by amalgam ({quantization}).\n\n{}",
        amalgam_merge::card::mlx_usage(&name)
    )
}
