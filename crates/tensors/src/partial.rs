//! Writing under a temporary name beside the destination, renamed into place only once
//! complete and synced, so an interrupted write never looks finished: the one mechanism
//! the merge's staging folder, the GGUF writer, the logits file and hub downloads share.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_one(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

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
