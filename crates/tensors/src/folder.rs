//! A Hugging Face model folder: `config.json` plus safetensors weights, single-file or
//! sharded with an index, opened and validated as one tensor store.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::safetensors::{SafetensorsFile, TensorInfo};

/// The index file of sharded safetensors weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single-file weights name.
pub const SINGLE_FILE: &str = "model.safetensors";

/// An open model folder.
pub struct ModelFolder {
    root: PathBuf,
    config: Map<String, Value>,
    shards: Vec<SafetensorsFile>,
    /// Tensor name → index into `shards`.
    index: HashMap<String, usize>,
}

/// A tensor found in a folder: the file that holds it and where.
#[derive(Clone, Copy)]
pub struct TensorRef<'a> {
    pub file: &'a SafetensorsFile,
    pub info: &'a TensorInfo,
}

impl TensorRef<'_> {
    /// The tensor's raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        self.file.bytes(self.info.start, self.info.end)
    }
}

impl ModelFolder {
    /// Opens `root`: reads `config.json` and maps and validates every weight shard.
    pub fn open(root: &Path) -> Result<ModelFolder> {
        let config_path = resolve_file(root, "config.json")
            .ok_or_else(|| Error::NoConfig { folder: root.to_owned() })?;
        let config = match read_json(&config_path)? {
            Value::Object(map) => map,
            _ => {
                return Err(Error::Json {
                    path: config_path,
                    reason: "expected a JSON object".into(),
                });
            }
        };
        let (shards, index) = open_weights(root)?;
        Ok(ModelFolder { root: root.to_owned(), config, shards, index })
    }

    /// The folder's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Map<String, Value> {
        &self.config
    }

    /// Finds a tensor by name; `Ok(None)` if the model has none of that name.
    pub fn tensor(&self, name: &str) -> Result<Option<TensorRef<'_>>> {
        let Some(&shard) = self.index.get(name) else { return Ok(None) };
        let file = &self.shards[shard];
        Ok(file.info(name)?.map(|info| TensorRef { file, info }))
    }

    /// Whether the model has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.index.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The path of an auxiliary file in the folder (a tokenizer file, say), if present.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        resolve_file(&self.root, name)
    }
}

/// Opens the weight files of `root`, returning the shards and the name → shard map.
fn open_weights(root: &Path) -> Result<(Vec<SafetensorsFile>, HashMap<String, usize>)> {
    if let Some(index_path) = resolve_file(root, INDEX_FILE) {
        return open_sharded(root, &index_path);
    }
    if let Some(path) = resolve_file(root, SINGLE_FILE) {
        let file = SafetensorsFile::open(&path)?;
        let index = file.names().map(|n| (n.to_owned(), 0)).collect();
        return Ok((vec![file], index));
    }
    if let Some(file) = pickle_file(root) {
        return Err(Error::PickleWeights { folder: root.to_owned(), file });
    }
    Err(Error::NoWeights { folder: root.to_owned() })
}

/// Opens the shards named by a `model.safetensors.index.json`.
fn open_sharded(
    root: &Path,
    index_path: &Path,
) -> Result<(Vec<SafetensorsFile>, HashMap<String, usize>)> {
    let invalid = |reason: &str| Error::InvalidIndex {
        path: index_path.to_owned(),
        reason: reason.to_owned(),
    };
    let json = read_json(index_path)?;
    let weight_map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no \"weight_map\" object; the index is corrupt, fetch it again"))?;
    let mut shard_ids: HashMap<&str, usize> = HashMap::new();
    let mut shards = Vec::new();
    let mut index = HashMap::with_capacity(weight_map.len());
    for (name, file) in weight_map {
        let file = file
            .as_str()
            .ok_or_else(|| invalid(&format!("the shard of {name} is not a file name")))?;
        let id = match shard_ids.get(file) {
            Some(&id) => id,
            None => {
                if !is_inside(file) {
                    return Err(Error::ShardOutsideFolder {
                        index: index_path.to_owned(),
                        file: file.to_owned(),
                    });
                }
                let path = resolve_file(root, file).ok_or_else(|| {
                    invalid(&format!(
                        "the shard {file} it names is missing; the download is incomplete, \
                         fetch the model again"
                    ))
                })?;
                shards.push(SafetensorsFile::open(&path)?);
                shard_ids.insert(file, shards.len() - 1);
                shards.len() - 1
            }
        };
        if !shards[id].names().any(|n| n == name) {
            return Err(Error::MissingFromShard {
                name: name.clone(),
                index: index_path.to_owned(),
                shard: shards[id].path().to_owned(),
            });
        }
        index.insert(name.clone(), id);
    }
    Ok((shards, index))
}

/// Whether a file name from an index stays inside its folder, judged lexically: relative,
/// and made only of plain components (hub snapshots are symlinks into `../../blobs`, so
/// resolving links would wrongly reject them).
pub fn is_inside(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// The first pickle weight file in `root`, if any.
fn pickle_file(root: &Path) -> Option<String> {
    let entries = fs::read_dir(root).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".bin") || n.ends_with(".pt") || n.ends_with(".pth"))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Resolves `name` inside `root` to a readable path, or `None` if it is absent.
///
/// A hub snapshot's files are symlinks into `../../blobs/`. Copies made by tools that do
/// not keep symlinks (a checkout with `core.symlinks=false`, some archivers) turn each link
/// into a small text file holding its target; those are followed too, but only to a blob
/// of the same repository.
pub fn resolve_file(root: &Path, name: &str) -> Option<PathBuf> {
    let path = root.join(name);
    let meta = fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() < 256
        && let Some(blob) = flattened_link_target(root, &path)
    {
        return Some(blob);
    }
    Some(path)
}

/// If `path` is a flattened hub symlink (`../../blobs/<hex>`), the blob it points to.
fn flattened_link_target(root: &Path, path: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(path).ok()?;
    let hash = text.trim_end().strip_prefix("../../blobs/")?;
    if hash.len() < 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Only top-level files carry this form (a deeper file would need one more `../`).
    if path.parent()? != root {
        return None;
    }
    let repo = root.parent()?.parent()?;
    let blob = repo.join("blobs").join(hash);
    blob.is_file().then_some(blob)
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Json { path: path.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_inside_check() {
        assert!(is_inside("model-00001-of-00002.safetensors"));
        assert!(is_inside("sub/model.safetensors"));
        assert!(!is_inside("../model.safetensors"));
        assert!(!is_inside("/etc/passwd"));
        assert!(!is_inside("a/../../b"));
        assert!(!is_inside("./x"));
        assert!(!is_inside(""));
    }

    #[test]
    fn flattened_symlink_is_followed_only_into_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--a--b");
        let snap = repo.join("snapshots").join("abc");
        fs::create_dir_all(&snap).unwrap();
        fs::create_dir_all(repo.join("blobs")).unwrap();
        let hash = "0123456789abcdef0123456789abcdef01234567";
        fs::write(repo.join("blobs").join(hash), "{\"x\": 1}").unwrap();
        fs::write(snap.join("config.json"), format!("../../blobs/{hash}")).unwrap();
        fs::write(snap.join("other.json"), "../../etc/passwd").unwrap();
        assert_eq!(resolve_file(&snap, "config.json").unwrap(), repo.join("blobs").join(hash));
        assert_eq!(resolve_file(&snap, "other.json").unwrap(), snap.join("other.json"));
        assert!(resolve_file(&snap, "missing.json").is_none());
    }
}
