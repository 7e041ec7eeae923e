//! `amalgam inspect FILE`: the metadata and a tensor table of a GGUF file, a safetensors
//! file or a model folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use amalgam_gguf::GgufFile;
use amalgam_tensors::{ModelFolder, SafetensorsFile};
use clap::Args;

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
