//! MLX folders: `amalgam quantize MODEL OUT_DIR --mlx`, a Hugging Face Llama folder to the
//! MLX folder `mlx_lm.convert -q` writes (weights, index and config byte-equal to it, the
//! tokenizer files copied, an mlx-community style card); and `amalgam convert MLX_DIR
//! OUT_DIR`, such a folder dequantized as `mlx_lm.convert -d` does.

use std::fs;
use std::path::Path;

use amalgam_mlx::convert::{Options, plan};
use amalgam_mlx::pyjson::dumps;
use amalgam_mlx::{Affine, Recipe};
use amalgam_tensors::{DType, ModelFolder, partial};
use anyhow::{Context, bail};
use serde_json::Value;

use crate::progress::Bar;

/// The MLX flags, named as mlx_lm.convert names them.
pub struct MlxArgs<'a> {
    pub bits: u32,
    pub group_size: Option<usize>,
    pub mode: &'a str,
    pub recipe: Option<&'a str>,
    pub dtype: Option<&'a str>,
}

/// The files beside the weights mlx_lm's output carries, copied when the input has them
/// (`tokenizer_config.json` is written by [`tokenizer_config`]).
const COPIED: [&str; 4] =
    ["tokenizer.json", "tokenizer.model", "chat_template.jinja", "generation_config.json"];

/// Writes `folder`'s model to `out` as MLX.
pub fn run(
    model: &str,
    folder_path: &Path,
    out: &Path,
    args: &MlxArgs,
    bar: &Bar,
) -> anyhow::Result<()> {
    if args.mode != "affine" {
        bail!("--q-mode {}: amalgam writes MLX's affine mode so far", args.mode);
    }
    let dtype = match args.dtype {
        None => None,
        Some(name) => Some(
            DType::from_torch_name(name)
                .filter(|d| *d != DType::F64)
                .with_context(|| format!("--dtype {name}: use float16, bfloat16 or float32"))?,
        ),
    };
    Affine::new(args.bits, args.group_size.unwrap_or(64))?;
    let recipe = args.recipe.map(Recipe::named).transpose()?;
    let folder = ModelFolder::open(folder_path)?;
    let options = Options { bits: args.bits, group_size: args.group_size, recipe, dtype };
    let plan = plan(&folder, &options)?;
    bar.start_bytes("quantizing", plan.bytes as u64);
    let written = stage(out, |staging| {
        plan.write(&folder, staging, &|n| bar.add(n as u64))?;
        fs::write(staging.join("model.safetensors.index.json"), &plan.index)?;
        fs::write(staging.join("config.json"), dumps(&Value::Object(plan.config.clone())))?;
        copy_beside(folder_path, staging, &COPIED)?;
        tokenizer_config(folder_path, staging)?;
        fs::write(staging.join("README.md"), card(model, out, args))?;
        Ok(())
    });
    bar.finish();
    written
}

/// `amalgam convert MLX_DIR OUT_DIR`: the folder dequantized, its other files copied.
pub fn dequantize(dir: &Path, out: &Path, bar: &Bar) -> anyhow::Result<()> {
    let plan = amalgam_mlx::dequantize::plan(dir)?;
    bar.start_bytes("dequantizing", plan.bytes as u64);
    let written = stage(out, |staging| {
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

/// Writes `out` through a staging folder beside it, renamed into place when `fill` has
/// filled it (an older `out` replaced), removed if `fill` fails.
fn stage(out: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let staging = partial::sibling(out, "mlx");
    let _tracked = partial::track(&staging);
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let written = fill(&staging).and_then(|()| {
        if out.exists() {
            fs::remove_dir_all(out).with_context(|| format!("replacing {}", out.display()))?;
        }
        Ok(partial::commit(&staging, out)?)
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
fn card(model: &str, out: &Path, args: &MlxArgs) -> String {
    let name = out.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let what = match args.recipe {
        Some(r) => format!("the {r} recipe"),
        None => format!(
            "{}-bit affine quantization, groups of {}",
            args.bits,
            args.group_size.unwrap_or(64)
        ),
    };
    format!(
        "---\nlibrary_name: mlx\ntags:\n- mlx\nbase_model: {model}\npipeline_tag: text-generation\n---\n\n\
         # {name}\n\nThis model was converted to MLX format from `{model}` by amalgam ({what}).\n\n\
         ## Use with mlx\n\n```bash\npip install mlx-lm\n```\n\n```python\nfrom mlx_lm import load, generate\n\n\
         model, tokenizer = load(\"{name}\")\n\nprompt = \"hello\"\n\n\
         if tokenizer.chat_template is not None:\n    messages = [{{\"role\": \"user\", \"content\": prompt}}]\n    \
         prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)\n\n\
         response = generate(model, tokenizer, prompt=prompt, verbose=True)\n```\n"
    )
}
