//! What a merge tells its caller besides errors: warnings, the start of writing, download
//! progress, and (through [`Progress`]) bytes and tensors done.

use crate::execute::Progress;

/// Receives what a merge reports besides errors.
pub trait Reporter: Progress {
    /// Something the user should know (an ignored key, a mergekit quirk).
    fn warn(&self, message: &str);
    /// Writing starts: this many tensors and output bytes.
    fn begin(&self, _tensors: usize, _bytes: u64) {}
    /// Download progress of one file.
    fn download(&self, _file: &str, _done: u64, _total: Option<u64>) {}
}
