//! What several commands share: mergekit's size syntax, llama.cpp's mixture names, finding
//! a model as `amalgam merge` does, and one model run through the merge engine (for
//! `convert` and re-quantizing a GGUF).

use std::path::{Path, PathBuf};

use amalgam_gguf::FileType;
use amalgam_merge::resolve::Resolver;
use amalgam_merge::{MergeOptions, ModelRef};
use amalgam_tensors::hub;

use crate::progress::Bar;

/// Parses a size the way mergekit does: digits, or a number with a K/M/B suffix
/// (decimal: x1e3, x1e6, x1e9). Fractions such as `1.5B` are accepted too.
pub fn parse_kmb(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&text[..i], 1e3),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&text[..i], 1e6),
        Some((i, c)) if c.eq_ignore_ascii_case(&'b') || c.eq_ignore_ascii_case(&'g') => {
            (&text[..i], 1e9)
        }
        _ => (text, 1.0),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a size; write e.g. 5B, 500M or 1000000"))?;
    Ok((value * scale).round() as u64)
}

/// Parses a mixture name, listing the valid ones on error.
pub fn parse_file_type(text: &str) -> Result<FileType, String> {
    FileType::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = FileType::ALL.iter().map(|f| f.name()).collect();
        format!("unknown quantization {text:?}; choose one of {}", names.join(", "))
    })
}

/// Finds a model folder from a path or hub id, as `amalgam merge` does.
pub fn locate(model: &str, bar: &Bar) -> anyhow::Result<PathBuf> {
    let reference = ModelRef::parse(model).map_err(anyhow::Error::msg)?;
    let resolver = Resolver {
        cache: hub::cache_dir(),
        offline: hub::offline(),
        progress: &|file, done, total| amalgam_merge::Reporter::download(bar, file, done, total),
    };
    Ok(resolver.locate(&reference)?.folder)
}

/// A passthrough config over one model (a GGUF file, for convert and re-quantize).
pub fn single_model_config(model: &Path, dtype: &str) -> anyhow::Result<String> {
    let path = serde_json::to_string(&model.display().to_string())?;
    Ok(format!("merge_method: passthrough\nmodels:\n  - model: {path}\ndtype: {dtype}\n"))
}

/// Merge options for rewriting one model: no card, tokenizer carried over, strict config.
pub fn single_model_options(force: bool) -> MergeOptions {
    MergeOptions {
        out_shard_size: 0,
        copy_tokenizer: true,
        write_model_card: false,
        allow_crimes: false,
        random_seed: 0,
        strict: true,
        force,
        dry_run: false,
        resume: amalgam_merge::run::Resume::Never,
        truncate_vocab: false,
        cache_dir: None,
        quant: None,
        tokenizer_pre: None,
        split_max_size: None,
        detect_pre: None,
        evaluate: None,
        writer: None,
    }
}

/// Whether `path` is a file, or a folder with anything in it: an output the MLX commands
/// replace only with `--force`.
pub fn occupied(path: &Path) -> bool {
    path.is_file() || std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_mergekit() {
        assert_eq!(parse_kmb("5B"), Ok(5_000_000_000));
        assert_eq!(parse_kmb("1b"), Ok(1_000_000_000));
        assert_eq!(parse_kmb("500M"), Ok(500_000_000));
        assert_eq!(parse_kmb("2k"), Ok(2_000));
        assert_eq!(parse_kmb("12345"), Ok(12_345));
        assert_eq!(parse_kmb("1.5B"), Ok(1_500_000_000));
        let not_a_size =
            |text: &str| format!("{text:?} is not a size; write e.g. 5B, 500M or 1000000");
        assert_eq!(parse_kmb("lots"), Err(not_a_size("lots")));
        assert_eq!(parse_kmb("-1"), Err(not_a_size("-1")));
        assert_eq!(parse_kmb(""), Err(not_a_size("")));
    }
}
