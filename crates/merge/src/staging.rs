//! The staging folder a folder merge is written into: beside the output, on the same file
//! system, synced and renamed into place only when complete, removed if dropped before.

use std::fs;
use std::path::{Path, PathBuf};

use amalgam_tensors::partial::{self, Tracked, sibling};

use crate::error::{MergeError, Result};

/// A folder beside the output that becomes the output on commit, and is deleted if
/// dropped before (on any error).
pub(crate) struct Staging {
    pub(crate) path: PathBuf,
    committed: bool,
    /// Lists the folder for an interrupt handler to remove.
    _tracked: Tracked,
}

impl Staging {
    pub(crate) fn create(out_dir: &Path) -> Result<Staging> {
        let path = sibling(out_dir, "partial");
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| MergeError::io("create", parent, e))?;
        }
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).map_err(|e| MergeError::io("create", &path, e))?;
        let _tracked = partial::track(&path);
        Ok(Staging { path, committed: false, _tracked })
    }

    /// Syncs the staged files and renames the folder to `out_dir` (an empty folder there,
    /// or with `force` any, is replaced).
    pub(crate) fn commit(mut self, out_dir: &Path, force: bool) -> Result<()> {
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

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
