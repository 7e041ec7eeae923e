//! Split GGUF files as llama.cpp's `gguf-split` makes them: `NAME-00001-of-0000N.gguf`,
//! the first part holding all metadata, every part holding `split.no`, `split.count` and
//! `split.tensors.count`, and tensors grouped in order under a size limit.

use std::path::{Path, PathBuf};

use crate::value::Value;
use crate::write::TensorSpec;

/// The path of part `index` (0-based) of `count` for an output named `path`
/// (`model.gguf` → `model-00001-of-00003.gguf`).
pub fn part_path(path: &Path, index: usize, count: usize) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}-{:05}-of-{count:05}.gguf", index + 1))
}

/// If `path` is the first part of a split (`…-00001-of-0000N.gguf`), every part's path.
pub fn parts_of(path: &Path) -> Option<Vec<PathBuf>> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (prefix, count) = stem.rsplit_once("-of-")?;
    let (base, first) = prefix.rsplit_once('-')?;
    if first != "00001" || count.len() != 5 {
        return None;
    }
    let count: usize = count.parse().ok()?;
    let base_path = path.with_file_name(format!("{base}.gguf"));
    Some((0..count).map(|i| part_path(&base_path, i, count)).collect())
}

/// Groups tensors into parts of at most `max_bytes` of data each (a tensor larger than
/// the limit gets a part of its own), in order.
pub fn group(tensors: &[TensorSpec], max_bytes: u64) -> Vec<usize> {
    let mut part = 0;
    let mut size = 0u64;
    tensors
        .iter()
        .map(|t| {
            if size > 0 && size + t.size() > max_bytes {
                part += 1;
                size = 0;
            }
            size += t.size();
            part
        })
        .collect()
}

/// The metadata of part `index` of `count` holding `total` tensors in all: everything for
/// the first part, only the split keys for the others.
pub fn part_metadata(
    metadata: &[(String, Value)],
    index: usize,
    count: usize,
    total: usize,
) -> Vec<(String, Value)> {
    let mut out = if index == 0 { metadata.to_vec() } else { Vec::new() };
    out.push(("split.no".into(), Value::U16(index as u16)));
    out.push(("split.count".into(), Value::U16(count as u16)));
    out.push(("split.tensors.count".into(), Value::I32(total as i32)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;

    #[test]
    fn names_and_groups() {
        let p = part_path(Path::new("/x/model.gguf"), 1, 3);
        assert_eq!(p, Path::new("/x/model-00002-of-00003.gguf"));
        let parts = parts_of(Path::new("/x/model-00001-of-00003.gguf")).unwrap();
        assert_eq!(parts[2], Path::new("/x/model-00003-of-00003.gguf"));
        assert!(parts_of(Path::new("/x/model.gguf")).is_none());
        assert!(parts_of(Path::new("/x/model-00002-of-00003.gguf")).is_none());
        let t = |n: u64| TensorSpec { name: "t".into(), dims: vec![n], ty: GgmlType::F32 };
        assert_eq!(
            group(&[t(10), t(10), t(10), t(100), t(1)], 120),
            vec![0, 0, 0, 1, 2],
            "F32: 40 bytes per 10"
        );
    }
}
