//! Writing under a temporary name beside the destination, renamed into place only once
//! complete and synced, so an interrupted write never looks finished: the one mechanism
//! the merge's staging folder, the GGUF writer, the logits file and hub downloads share.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::journal;

/// The partials this process is writing now, each with whether it can be resumed.
static UNFINISHED: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());

fn unfinished() -> MutexGuard<'static, Vec<(PathBuf, bool)>> {
    // A panic while holding the lock leaves a list that is still valid.
    UNFINISHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A partial this process is writing, listed for [`remove_unfinished`] until dropped
/// (after its commit, or after the error that abandons it).
#[must_use = "the partial is listed only while the guard lives"]
pub struct Tracked {
    path: PathBuf,
}

/// Lists `path` as a partial this process is writing.
pub fn track(path: &Path) -> Tracked {
    unfinished().push((path.to_owned(), false));
    Tracked { path: path.to_owned() }
}

/// Lists `path` as a partial folder this process is writing that a later process can
/// finish: one that keeps a [`journal`] with tensors recorded in it outlives an interrupt.
pub fn track_resumable(path: &Path) -> Tracked {
    unfinished().push((path.to_owned(), true));
    Tracked { path: path.to_owned() }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut list = unfinished();
        if let Some(i) = list.iter().position(|(p, _)| *p == self.path) {
            list.swap_remove(i);
        }
    }
}

/// What an interrupt did with a partial this process was writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Left {
    Removed(PathBuf),
    /// Kept for a later process to finish: the journal records `done` tensors.
    Kept {
        path: PathBuf,
        done: usize,
    },
}

/// Removes every partial this process is writing — for an interrupt handler, just before
/// the process exits — except resumable ones with recorded progress, which are kept; says
/// which was which. Writers may still be adding files to a folder, so a folder is tried
/// a few times.
pub fn remove_unfinished() -> Vec<Left> {
    let list = unfinished().clone();
    let left = |(path, resumable): (PathBuf, bool)| {
        let done = if resumable { recorded(&path).unwrap_or(0) } else { 0 };
        if done > 0 {
            Some(Left::Kept { path, done })
        } else {
            remove(&path).then_some(Left::Removed(path))
        }
    };
    list.into_iter().filter_map(left).collect()
}

/// How many tensors the journal in partial folder `path` records, if it keeps one.
fn recorded(path: &Path) -> Option<usize> {
    journal::Journal::read(&path.join(journal::FILE_NAME)).ok().map(|r| r.done.len())
}

/// Removes a file or folder; whether it is gone.
fn remove(path: &Path) -> bool {
    for _ in 0..5 {
        let result = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
        if result.is_ok() || !path.exists() {
            return true;
        }
    }
    false
}

/// A partial left beside an output by an amalgam process that is no longer running: its path and
/// that process's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    pub path: PathBuf,
    pub pid: u32,
}

impl Stale {
    /// How many tensors its journal records as written, if it keeps one (it can be
    /// resumed).
    pub fn resumable(&self) -> Option<usize> {
        recorded(&self.path)
    }

    /// Whether it was being written as `dest` (`.NAME.amalgam-partial-PID` for dest's
    /// NAME), not as another output in the same folder.
    pub fn is_for(&self, dest: &Path) -> bool {
        let (Some(name), Some(own)) = (dest.file_name(), self.path.file_name()) else {
            return false;
        };
        let prefix = format!(".{}.amalgam-partial-", name.to_string_lossy());
        own.to_string_lossy().starts_with(&prefix)
    }
}

/// `PATH, left unfinished by amalgam process PID, which is no longer running`: what a
/// note about the partial says of it.
impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, left unfinished by amalgam process {}, which is no longer running",
            self.path.display(),
            self.pid
        )
    }
}

/// The partials (`.NAME.amalgam-partial-PID`) that processes no longer running left in
/// the folder that holds (or will hold) `dest`. Only where running processes can be told
/// (Linux's `/proc`); elsewhere none. An output a replacing merge had moved aside
/// (`.NAME.amalgam-old-PID`) is the user's data, not a partial.
pub fn stale(dest: &Path) -> Vec<Stale> {
    let Ok(entries) = fs::read_dir(folder_of(dest)) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = partial_pid(&name)?;
            (pid != std::process::id() && !running(pid)).then(|| Stale { path: e.path(), pid })
        })
        .collect()
}

/// Removes one stale partial; whether it is gone.
pub fn remove_one(stale: &Stale) -> bool {
    remove(&stale.path)
}

/// The process id in a partial's name, `.NAME.amalgam-partial-PID`.
fn partial_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".amalgam-partial-")?;
    tail.parse().ok()
}

/// Whether process `pid` is running (assumed so where that cannot be told).
fn running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// `.NAME.amalgam-KIND-PID` beside `dest`: hidden, unique to this process, and on the
/// same file system, so the final rename is atomic.
pub fn sibling(dest: &Path, kind: &str) -> PathBuf {
    let name = dest.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy());
    dest.with_file_name(format!(".{name}.amalgam-{kind}-{}", std::process::id()))
}

/// Flushes `path` to stable storage: a file's data, or a folder's entries and every file
/// directly in it.
pub fn sync(path: &Path) -> Result<()> {
    if path.is_dir() {
        let entries = fs::read_dir(path).map_err(|e| Error::io("list", path, e))?;
        for entry in entries.flatten() {
            let file = entry.path();
            if file.is_file() {
                sync_one(&file)?;
            }
        }
    }
    sync_one(path)
}

fn sync_one(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io("sync", path, e))
}

/// Syncs the finished `temp` (file or folder), renames it to `dest` and syncs the folder
/// that now holds it, so the rename itself survives a crash.
pub fn commit(temp: &Path, dest: &Path) -> Result<()> {
    sync(temp)?;
    fs::rename(temp, dest).map_err(|e| Error::io("rename into", dest, e))?;
    sync_parent(dest)
}

/// Syncs the folder holding `path` (the current folder for a bare name).
pub fn sync_parent(path: &Path) -> Result<()> {
    sync_one(folder_of(path))
}

/// The folder holding `path` (the current folder for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_give_their_process() {
        assert_eq!(partial_pid(".model.gguf.amalgam-partial-4242"), Some(4242));
        assert_eq!(partial_pid(".out.amalgam-partial-7"), Some(7));
        assert_eq!(partial_pid(".out.amalgam-old-7"), None);
        assert_eq!(partial_pid("model.gguf.amalgam-partial-7"), None);
        assert_eq!(partial_pid(".model.gguf"), None);
        assert_eq!(partial_pid(".x.amalgam-partial-pid"), None);
    }

    #[test]
    fn stale_partials_of_dead_processes_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale_file = dir.path().join(format!(".out.gguf.amalgam-partial-{dead}"));
        let stale_dir = dir.path().join(format!(".out.amalgam-partial-{dead}"));
        let mine = sibling(&dir.path().join("other"), "partial");
        let user = dir.path().join(".hidden-notes");
        fs::write(&stale_file, b"x").unwrap();
        fs::create_dir(&stale_dir).unwrap();
        fs::write(stale_dir.join("model.safetensors"), b"x").unwrap();
        fs::write(&mine, b"x").unwrap();
        fs::write(&user, b"x").unwrap();
        let mut removed = stale(&dir.path().join("out.gguf"));
        assert!(removed.iter().all(remove_one));
        removed.sort_by(|a, b| a.path.cmp(&b.path));
        let mut expected = vec![
            Stale { path: stale_file.clone(), pid: dead },
            Stale { path: stale_dir.clone(), pid: dead },
        ];
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(removed, expected);
        assert!(!stale_file.exists() && !stale_dir.exists());
        assert!(mine.exists() && user.exists());
    }

    #[test]
    fn tracked_partials_are_removed_until_their_guard_drops() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("staged");
        let file = dir.path().join("part.gguf");
        fs::create_dir(&folder).unwrap();
        fs::write(folder.join("a"), b"1").unwrap();
        fs::write(&file, b"1").unwrap();
        let guard = track(&folder);
        drop(track(&file));
        let removed = remove_unfinished();
        assert!(removed.contains(&Left::Removed(folder.clone())), "{removed:?}");
        assert!(!folder.exists());
        assert!(file.exists(), "an untracked partial is left alone");
        drop(guard);
        assert!(!unfinished().iter().any(|(p, _)| *p == folder));
    }

    #[test]
    fn an_interrupt_keeps_a_resumable_partial_only_with_recorded_progress() {
        let dir = tempfile::tempdir().unwrap();
        let (started, fresh) = (dir.path().join("started"), dir.path().join("fresh"));
        for folder in [&started, &fresh] {
            fs::create_dir(folder).unwrap();
            let journal =
                journal::Journal::create(&folder.join(journal::FILE_NAME), &serde_json::json!({}))
                    .unwrap();
            if folder == &started {
                journal.record(&[0, 2]).unwrap();
            }
        }
        let _guards = (track_resumable(&started), track_resumable(&fresh));
        let left = remove_unfinished();
        assert!(left.contains(&Left::Kept { path: started.clone(), done: 2 }), "{left:?}");
        assert!(left.contains(&Left::Removed(fresh.clone())), "{left:?}");
        assert!(started.exists() && !fresh.exists());
    }

    #[test]
    fn a_sibling_is_hidden_beside_its_destination_and_commit_moves_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model.gguf");
        let temp = sibling(&dest, "partial");
        assert_eq!(temp.parent(), Some(dir.path()));
        let name = temp.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!(".model.gguf.amalgam-partial-{}", std::process::id()));
        fs::write(&temp, b"done").unwrap();
        commit(&temp, &dest).unwrap();
        assert!(!temp.exists());
        assert_eq!(fs::read(&dest).unwrap(), b"done");
        let folder = dir.path().join("out");
        let staged = sibling(&folder, "partial");
        fs::create_dir(&staged).unwrap();
        fs::write(staged.join("a"), b"1").unwrap();
        commit(&staged, &folder).unwrap();
        assert_eq!(fs::read(folder.join("a")).unwrap(), b"1");
    }
}
