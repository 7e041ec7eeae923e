//! The record a resumable partial output keeps of itself: what it was made from (a
//! fingerprint its writer composes) and which of its tensors are written and synced, so a
//! later process can finish it instead of starting over.
//!
//! The file is text: a first line naming the format, the fingerprint as one line of JSON,
//! then one tensor index per line, each appended only after that tensor's bytes are on
//! stable storage. A torn last line (no newline) is ignored.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::error::{Error, Result};

/// The journal's name inside a partial output folder.
pub const FILE_NAME: &str = ".amalgam-journal";

const FORMAT: &str = "amalgam-journal 1";

/// What an earlier, unfinished write recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub fingerprint: Value,
    /// Tensors written and synced.
    pub done: BTreeSet<usize>,
}

/// An open journal, appended to as tensors are finished.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Starts a journal at `path` for an output made from `fingerprint`.
    pub fn create(path: &Path, fingerprint: &Value) -> Result<Journal> {
        let mut file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        writeln!(file, "{FORMAT}\n{fingerprint}")
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("write", path, e))?;
        Ok(Journal { path: path.to_owned(), file: Mutex::new(file) })
    }

    /// Opens an existing journal to append to.
    pub fn reopen(path: &Path) -> Result<Journal> {
        let file =
            OpenOptions::new().append(true).open(path).map_err(|e| Error::io("open", path, e))?;
        Ok(Journal { path: path.to_owned(), file: Mutex::new(file) })
    }

    /// Reads what the journal at `path` recorded.
    pub fn read(path: &Path) -> Result<Recorded> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        let invalid = |reason: &str| Error::Json { path: path.to_owned(), reason: reason.into() };
        let mut lines = text.split_inclusive('\n');
        if lines.next().map(str::trim_end) != Some(FORMAT) {
            return Err(invalid(&format!("not an amalgam journal (no `{FORMAT}` line)")));
        }
        let fingerprint = lines
            .next()
            .filter(|l| l.ends_with('\n'))
            .ok_or_else(|| invalid("the fingerprint line is missing"))?;
        let fingerprint = serde_json::from_str(fingerprint).map_err(|e| invalid(&e.to_string()))?;
        let mut done = BTreeSet::new();
        for line in lines.filter(|l| l.ends_with('\n')) {
            let index = line.trim_end().parse().map_err(|_| invalid(&format!("line {line:?}")))?;
            done.insert(index);
        }
        Ok(Recorded { fingerprint, done })
    }

    /// Records `indices` as written; the caller has synced their bytes already.
    pub fn record(&self, indices: &[usize]) -> Result<()> {
        let lines: String = indices.iter().map(|i| format!("{i}\n")).collect();
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(lines.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("write", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_reads_back_what_was_recorded_up_to_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let fingerprint = serde_json::json!({"config": "a: 1\nb: 2", "inputs": [1, 2]});
        let journal = Journal::create(&path, &fingerprint).unwrap();
        journal.record(&[3, 1]).unwrap();
        drop(journal);
        Journal::reopen(&path).unwrap().record(&[7]).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"12").unwrap();
        let read = Journal::read(&path).unwrap();
        assert_eq!(read.fingerprint, fingerprint);
        assert_eq!(read.done, BTreeSet::from([1, 3, 7]), "the torn 12 is not taken");
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "hello\n").unwrap();
        let error = Journal::read(&path).unwrap_err().to_string();
        assert!(error.contains("not an amalgam journal"), "{error}");
        std::fs::write(&path, format!("{FORMAT}\n{{}}\nx\n")).unwrap();
        let error = Journal::read(&path).unwrap_err().to_string();
        assert!(error.contains("line \"x\\n\""), "{error}");
        std::fs::write(&path, format!("{FORMAT}\n{{}}")).unwrap();
        let error = Journal::read(&path).unwrap_err().to_string();
        assert!(error.contains("fingerprint line is missing"), "{error}");
    }
}
