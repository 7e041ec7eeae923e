//! `amalgam inspect FILE`: the metadata and a tensor table of a GGUF file, a safetensors
//! file or a model folder (for an MLX folder, each quantized layer's bits and group size).

use std::io::Write;
use std::path::{Path, PathBuf};

use amalgam_gguf::GgufFile;
use amalgam_mlx::header;
use amalgam_tensors::{ModelFolder, SafetensorsFile};
use clap::Args;
use serde_json::{Map, Value};

/// Show a model file's metadata and tensors (GGUF, safetensors, or a model folder).
#[derive(Args)]
pub struct InspectArgs {
    /// A .gguf file, a .safetensors file, or a Hugging Face model folder.
    file: PathBuf,
    /// Print whole metadata values (long strings and arrays are abbreviated otherwise).
    #[arg(long)]
    full: bool,
}

/// Runs `amalgam inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.file.is_dir() {
        return inspect_folder(&args.file, &mut out);
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(&args.file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    if &magic == b"GGUF" {
        inspect_gguf(&args.file, args.full, &mut out)
    } else {
        inspect_safetensors(&args.file, &mut out)
    }
}

fn inspect_gguf(path: &Path, full: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let file = GgufFile::open(path)?;
    let h = &file.header;
    writeln!(
        out,
        "{}: GGUF v{}, {} metadata entries, {} tensors, alignment {}",
        path.display(),
        h.version,
        h.metadata.len(),
        h.tensors.len(),
        h.alignment
    )?;
    for (key, value) in &h.metadata {
        let text = if full { format!("{value:?}") } else { value.to_string() };
        writeln!(out, "  {key:<42} {text}")?;
    }
    writeln!(
        out,
        "\n  {:<40} {:<6} {:>22} {:>14}",
        "tensor", "type", "shape (ggml order)", "bytes"
    )?;
    let mut total = 0;
    for t in &h.tensors {
        writeln!(
            out,
            "  {:<40} {:<6} {:>22} {:>14}",
            t.name,
            t.ty.name(),
            format!("{:?}", t.dims),
            t.size
        )?;
        total += t.size;
    }
    writeln!(out, "  total {total} bytes of tensor data")?;
    Ok(())
}

fn inspect_safetensors(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let file = SafetensorsFile::open(path)?;
    let mut names: Vec<&str> = file.names().collect();
    names.sort_unstable();
    writeln!(out, "{}: safetensors, {} tensors", path.display(), names.len())?;
    table(out, names.into_iter().map(|n| (n.to_owned(), file.info(n))))
}

fn inspect_folder(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let config_path = path.join("config.json");
    if let Ok(Value::Object(config)) = amalgam_tensors::folder::read_json(&config_path)
        && config.contains_key("quantization")
    {
        return inspect_mlx(path, &config, out);
    }
    let folder = ModelFolder::open(path)?;
    let config = folder.config();
    writeln!(out, "{}: model folder, {} tensors", path.display(), folder.names().len())?;
    for key in [
        "architectures",
        "model_type",
        "num_hidden_layers",
        "hidden_size",
        "vocab_size",
        "torch_dtype",
        "dtype",
    ] {
        if let Some(v) = config.get(key) {
            writeln!(out, "  {key:<24} {v}")?;
        }
    }
    table(
        out,
        folder
            .names()
            .into_iter()
            .map(|n| (n.to_owned(), folder.tensor(n).map(|t| t.map(|t| t.info)))),
    )
}

/// An MLX folder: per tensor its dtype and shape, and for a packed weight the bits, the
/// group size and the unpacked shape.
fn inspect_mlx(
    path: &Path,
    config: &Map<String, Value>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let mut tensors = Vec::new();
    for file in &files {
        tensors.extend(header::read(file)?);
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let q = config.get("quantization").and_then(Value::as_object);
    let field = |k: &str| q.and_then(|q| q.get(k)).map_or("?".into(), Value::to_string);
    let layers = q.map_or(0, |q| q.values().filter(|v| v.is_object()).count());
    let (count, shards) = (tensors.len(), files.len());
    writeln!(out, "{}: MLX folder, {count} tensors in {shards} files", path.display())?;
    let (bits, group, mode) = (field("bits"), field("group_size"), field("mode"));
    writeln!(
        out,
        "  quantization             {bits} bits, groups of {group}, mode {mode}, {layers} per-layer entries"
    )?;
    writeln!(
        out,
        "\n  {:<56} {:<6} {:>14} {:>10} {:>18}",
        "tensor", "dtype", "shape", "bytes", "quantization"
    )?;
    let mut total = 0;
    for t in &tensors {
        let module = t.name.strip_suffix(".weight").unwrap_or(&t.name);
        let packed =
            t.dtype == "U32" && tensors.iter().any(|s| s.name == format!("{module}.scales"));
        let what = match header::quantization(config, module)?.filter(|_| packed) {
            Some(method) => {
                let (bits, group) = (method.bits(), method.group_size());
                let cols = t.shape.last().map_or(0, |&w| w as u64 * 32 / u64::from(bits));
                match method {
                    amalgam_mlx::Method::Affine(_) => format!("{bits}-bit g{group} ({cols} wide)"),
                    fp => format!("{} g{group} ({cols} wide)", fp.mode()),
                }
            }
            None => String::new(),
        };
        let shape = format!("{:?}", t.shape);
        writeln!(
            out,
            "  {:<56} {:<6} {:>14} {:>10} {:>18}",
            t.name, t.dtype, shape, t.bytes, what
        )?;
        total += t.bytes;
    }
    writeln!(out, "  total {total} bytes of tensor data")?;
    Ok(())
}

fn table<'a>(
    out: &mut impl Write,
    rows: impl Iterator<
        Item = (String, amalgam_tensors::Result<Option<&'a amalgam_tensors::TensorInfo>>),
    >,
) -> anyhow::Result<()> {
    writeln!(out, "\n  {:<56} {:<8} {:>18} {:>12}", "tensor", "dtype", "shape", "bytes")?;
    for (name, info) in rows {
        match info? {
            Some(i) => writeln!(
                out,
                "  {:<56} {:<8} {:>18} {:>12}",
                name,
                i.dtype.safetensors_name(),
                format!("{:?}", i.shape),
                i.end - i.start
            )?,
            None => writeln!(out, "  {name:<56} (missing)")?,
        }
    }
    Ok(())
}
