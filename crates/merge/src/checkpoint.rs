//! A merge's progress (a folder's or a GGUF file's), recorded as it goes so `merge
//! --resume` can finish it: a tensor enters the staging folder's journal only after the
//! bytes of its shard or part are synced, and the journal opens with a fingerprint of
//! what the merge is made from.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use amalgam_gguf::convert::Record;
use amalgam_tensors::journal::Journal;
use serde_json::{Value, json};

use crate::error::Result;
use crate::opened::Opened;
use crate::run::MergeOptions;

/// How often finished tensors are synced and recorded: often enough that an interrupt
/// loses little, seldom enough that syncing costs little.
const EVERY: Duration = Duration::from_secs(2);

/// Test hook: `N:SIGNAL` (e.g. `3:INT`, `3:KILL`) makes the process send itself SIGNAL
/// once N tensors are recorded, recording every tensor as it finishes. For the
/// interruption tests only.
const TEST_HOOK: &str = "AMALGAM_TEST_INTERRUPT_AFTER";

/// The journal of a staging folder, and what an earlier process recorded in it.
pub(crate) struct Checkpoint {
    journal: Journal,
    /// Tensors an interrupted earlier run already wrote.
    earlier: BTreeSet<usize>,
    pending: Mutex<Pending>,
    every: Duration,
    hook: Option<(usize, String)>,
}

struct Pending {
    indices: Vec<usize>,
    since: Instant,
    recorded: usize,
}

impl Checkpoint {
    pub(crate) fn new(journal: Journal, earlier: BTreeSet<usize>) -> Checkpoint {
        let hook = std::env::var(TEST_HOOK).ok().and_then(|v| {
            let (n, signal) = v.split_once(':')?;
            Some((n.parse().ok()?, signal.to_owned()))
        });
        Checkpoint {
            journal,
            pending: Mutex::new(Pending {
                indices: Vec::new(),
                since: Instant::now(),
                recorded: earlier.len(),
            }),
            earlier,
            every: if hook.is_some() { Duration::ZERO } else { EVERY },
            hook,
        }
    }

    /// Tensors an earlier run wrote.
    pub(crate) fn earlier(&self) -> &BTreeSet<usize> {
        &self.earlier
    }

    /// Notes tensor `index` as written; every so often `sync(tensors)` makes the bytes of
    /// the tensors finished since the last record durable, and they are recorded.
    pub(crate) fn finished(
        &self,
        index: usize,
        sync: impl FnOnce(&[usize]) -> Result<()>,
    ) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.indices.push(index);
        if pending.since.elapsed() < self.every {
            return Ok(());
        }
        sync(&pending.indices)?;
        self.journal.record(&pending.indices)?;
        pending.recorded += pending.indices.len();
        pending.indices.clear();
        pending.since = Instant::now();
        if let Some((after, signal)) = &self.hook
            && pending.recorded >= *after
        {
            interrupt_self(signal);
        }
        Ok(())
    }
}

/// A GGUF merge records its progress the same way.
impl Record for Checkpoint {
    fn earlier(&self, index: usize) -> bool {
        self.earlier.contains(&index)
    }

    fn finished(
        &self,
        index: usize,
        sync: &dyn Fn(&[usize]) -> amalgam_gguf::Result<()>,
    ) -> amalgam_gguf::Result<()> {
        Checkpoint::finished(self, index, |tensors| Ok(sync(tensors)?))
            .map_err(|e| amalgam_gguf::GgufError::Convert(e.to_string()))
    }
}

/// Sends this process `signal` and waits for it to end the process.
fn interrupt_self(signal: &str) {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill").args(["-s", signal, &pid]).status();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// What a merge's bytes depend on: the config text, the options that change tensors or
/// their layout, this build, and each input file's size and modification time. A partial
/// is resumed only by a run with the same fingerprint.
pub(crate) fn fingerprint(text: &str, options: &MergeOptions, opened: &Opened) -> Value {
    let mut inputs = Vec::new();
    for located in &opened.located {
        inputs.extend(files(&located.folder));
        if let Some(adapter) = &located.adapter {
            inputs.extend(files(adapter));
        }
    }
    json!({
        "amalgam": env!("CARGO_PKG_VERSION"),
        "config": text,
        "out_shard_size": options.out_shard_size,
        "random_seed": options.random_seed,
        "unsafe_truncate_embeddings": options.truncate_vocab,
        "quant": options.quant.map(|q| format!("{q:?}")),
        "tokenizer_pre": options.tokenizer_pre,
        "split_max_size": options.split_max_size,
        "inputs": inputs,
    })
}

/// `path` itself if it is a file, else the files directly in the folder, each as
/// `{path, size, mtime_ns}` (symbolic links followed, as into a hub cache's blobs).
fn files(path: &Path) -> Vec<Value> {
    // Absolute, so a run from another folder does not compare other files by the same name.
    let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let describe = |file: &Path| {
        let meta = std::fs::metadata(file).ok().filter(|m| m.is_file())?;
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        Some(json!({
            "path": file.display().to_string(),
            "size": meta.len(),
            "mtime_ns": mtime.to_string(),
        }))
    };
    if path.is_file() {
        return describe(path).into_iter().collect();
    }
    let Ok(entries) = std::fs::read_dir(path) else { return Vec::new() };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths.iter().filter_map(|p| describe(p)).collect()
}

/// The first difference between a partial's fingerprint and this run's, in words.
pub(crate) fn difference(was: &Value, now: &Value) -> Option<String> {
    if was == now {
        return None;
    }
    let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let keys = ["amalgam", "config", "out_shard_size", "random_seed", "unsafe_truncate_embeddings"];
    let gguf = ["quant", "tokenizer_pre", "split_max_size"];
    for key in keys.into_iter().chain(gguf) {
        if field(was, key) != field(now, key) {
            return Some(match key {
                "amalgam" => "it was made by another amalgam version".to_owned(),
                "config" => "the config has changed".to_owned(),
                _ => format!("--{} has changed", key.replace('_', "-")),
            });
        }
    }
    let listed = |v: &Value| field(v, "inputs").as_array().cloned().unwrap_or_default();
    let (was, now) = (listed(was), listed(now));
    let path_of = |v: &Value| field(v, "path").as_str().unwrap_or("?").to_owned();
    for file in &now {
        match was.iter().find(|w| path_of(w) == path_of(file)) {
            None => return Some(format!("the input {} is new", path_of(file))),
            Some(w) if w != file => {
                return Some(format!("the input {} has changed (size or time)", path_of(file)));
            }
            Some(_) => {}
        }
    }
    let gone = was.iter().find(|w| !now.iter().any(|n| path_of(n) == path_of(w)));
    Some(match gone {
        Some(w) => format!("the input {} is gone", path_of(w)),
        None => "its inputs have changed".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_names_what_changed() {
        let input = |path: &str, size: u64| json!({"path": path, "size": size, "mtime_ns": "1"});
        let base = json!({"amalgam": "1", "config": "a", "out_shard_size": 5, "random_seed": 0,
            "unsafe_truncate_embeddings": false, "inputs": [input("m/a", 1), input("m/b", 2)]});
        assert_eq!(difference(&base, &base), None);
        let with = |key: &str, value: Value| {
            let mut v = base.clone();
            v[key] = value;
            v
        };
        let said = |now: &Value| difference(&base, now).unwrap();
        assert_eq!(said(&with("config", json!("b"))), "the config has changed");
        assert_eq!(said(&with("random_seed", json!(1))), "--random-seed has changed");
        let inputs = |list: Vec<Value>| with("inputs", Value::Array(list));
        assert_eq!(
            said(&inputs(vec![input("m/a", 1), input("m/b", 3)])),
            "the input m/b has changed (size or time)"
        );
        assert_eq!(said(&inputs(vec![input("m/a", 1)])), "the input m/b is gone");
        assert_eq!(
            said(&inputs(vec![input("m/a", 1), input("m/b", 2), input("m/c", 1)])),
            "the input m/c is new"
        );
    }
}
