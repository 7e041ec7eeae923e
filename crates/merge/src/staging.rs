//! The staging folder a merge is written into (a folder merge's output, or a resumable
//! GGUF merge's files): beside the output, on the same file
//! system, synced and renamed into place only when complete, removed if dropped before —
//! or, after an interrupt, kept with its journal for `merge --resume` to finish.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use amalgam_tensors::journal::{self, Journal};
use amalgam_tensors::partial::{self, Stale, Tracked, sibling};
use serde_json::Value;

use crate::checkpoint::{self, Checkpoint};
use crate::error::{MergeError, Result};
use crate::report::Reporter;

/// A folder beside the output that becomes the output on commit, and is deleted if
/// dropped before (on any error).
pub(crate) struct Staging {
    pub(crate) path: PathBuf,
    /// The journal of a resumable merge.
    pub(crate) checkpoint: Option<Checkpoint>,
    committed: bool,
    /// Lists the folder for an interrupt handler.
    _tracked: Tracked,
}

impl Staging {
    /// A new, empty staging folder; with a `fingerprint` (of what the merge is made from)
    /// it keeps a journal, and an interrupt leaves it for `--resume`.
    pub(crate) fn create(out_dir: &Path, fingerprint: Option<&Value>) -> Result<Staging> {
        let path = sibling(out_dir, "partial");
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| MergeError::io("create", parent, e))?;
        }
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).map_err(|e| MergeError::io("create", &path, e))?;
        let Some(fingerprint) = fingerprint else {
            let _tracked = partial::track(&path);
            return Ok(Staging { path, checkpoint: None, committed: false, _tracked });
        };
        let _tracked = partial::track_resumable(&path);
        let journal = Journal::create(&path.join(journal::FILE_NAME), fingerprint)?;
        let checkpoint = Some(Checkpoint::new(journal, BTreeSet::new()));
        Ok(Staging { path, checkpoint, committed: false, _tracked })
    }

    /// The staging folder an interrupted merge of the same `fingerprint` left beside
    /// `out_dir`, taken over by this process; a new one (with a note) when there is none.
    /// Other partials left there are removed, each with a note. A partial made from
    /// anything else is an error that names the difference.
    pub(crate) fn resume(
        out_dir: &Path,
        fingerprint: &Value,
        reporter: &dyn Reporter,
    ) -> Result<Staging> {
        let mut stale = partial::stale(out_dir);
        // Only this output's partials: another output's merge is not this one's to finish.
        stale.retain(|s| s.is_for(out_dir));
        stale.sort_by_key(|s| fs::metadata(&s.path).and_then(|m| m.modified()).ok());
        let found = stale.iter().rposition(|s| s.resumable().is_some());
        let Some(found) = found.map(|i| stale.remove(i)) else {
            reporter.warn(&format!(
                "--resume: no interrupted merge into {} was found; merging from the start",
                out_dir.display()
            ));
            return Staging::create(out_dir, Some(fingerprint));
        };
        let recorded = Journal::read(&found.path.join(journal::FILE_NAME))?;
        if let Some(change) = checkpoint::difference(&recorded.fingerprint, fingerprint) {
            return Err(MergeError::Output(format!(
                "cannot resume the interrupted merge in {}: {change} since it was started. \
                 Run without --resume to merge from the start (the partial is then removed)",
                found.path.display()
            )));
        }
        for other in &stale {
            remove_other(other, reporter);
        }
        let path = sibling(out_dir, "partial");
        fs::rename(&found.path, &path).map_err(|e| MergeError::io("take over", &found.path, e))?;
        let _tracked = partial::track_resumable(&path);
        reporter.warn(&format!(
            "--resume: continuing the merge process {} left unfinished; {} tensors are \
             already written",
            found.pid,
            recorded.done.len()
        ));
        let journal = Journal::reopen(&path.join(journal::FILE_NAME))?;
        let checkpoint = Some(Checkpoint::new(journal, recorded.done));
        Ok(Staging { path, checkpoint, committed: false, _tracked })
    }

    /// Syncs the staged files and renames the folder to `out_dir` (an empty folder there,
    /// or with `force` any, is replaced).
    pub(crate) fn commit(mut self, out_dir: &Path, force: bool) -> Result<()> {
        if self.checkpoint.is_some() {
            let journal = self.path.join(journal::FILE_NAME);
            fs::remove_file(&journal).map_err(|e| MergeError::io("remove", &journal, e))?;
        }
        partial::sync(&self.path)?;
        let old = sibling(out_dir, "old");
        if out_dir.exists() {
            let empty = fs::read_dir(out_dir).is_ok_and(|mut d| d.next().is_none());
            if !empty && !force {
                return Err(MergeError::Output(format!(
                    "{} appeared while merging; pass --force to replace it",
                    out_dir.display()
                )));
            }
            fs::rename(out_dir, &old).map_err(|e| MergeError::io("move aside", out_dir, e))?;
        }
        fs::rename(&self.path, out_dir).map_err(|e| MergeError::io("rename into", out_dir, e))?;
        self.committed = true;
        let _ = fs::remove_dir_all(&old);
        let _ = partial::sync_parent(out_dir);
        Ok(())
    }
}

impl Staging {
    /// Syncs the files of a GGUF merge written in the staging folder and renames each to
    /// its path in `finals` (an existing file is replaced only with `force`); the folder,
    /// with its journal, is then removed.
    pub(crate) fn commit_files(self, finals: &[PathBuf], force: bool) -> Result<()> {
        let mut moves = Vec::with_capacity(finals.len());
        for fin in finals {
            let name = fin.file_name().ok_or_else(|| {
                MergeError::Output(format!("{} does not name a file", fin.display()))
            })?;
            if fin.exists() && !force {
                return Err(MergeError::Output(format!(
                    "{} appeared while merging; pass --force to replace it",
                    fin.display()
                )));
            }
            moves.push((self.path.join(name), fin));
        }
        // The journal goes first: from here on the partial is no longer resumable.
        if self.checkpoint.is_some() {
            let journal = self.path.join(journal::FILE_NAME);
            fs::remove_file(&journal).map_err(|e| MergeError::io("remove", &journal, e))?;
        }
        for (from, to) in moves {
            partial::commit(&from, to)?;
        }
        Ok(())
    }
}

/// Removes a stale partial that is not the one being resumed, with a note.
fn remove_other(stale: &Stale, reporter: &dyn Reporter) {
    if partial::remove_one(stale) {
        reporter.warn(&format!("removed {stale}"));
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
