//! A file laid out before it is written — header bytes, then one data region per tensor at
//! a known offset — filled region by region from several threads: the one output
//! mechanism behind safetensors shards and GGUF files, so no tensor is ever held whole.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where everything goes in a file: its header, and each tensor's data region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLayout {
    header: Vec<u8>,
    /// (absolute offset, length) of each tensor's data, in the format's order.
    regions: Vec<(u64, u64)>,
    total_len: u64,
}

impl FileLayout {
    /// A layout whose data starts right after `header`: `regions` are (offset, length)
    /// relative to that start, and the data (padding included) takes `data_len` bytes.
    pub fn new(header: Vec<u8>, regions: &[(u64, u64)], data_len: u64) -> FileLayout {
        let start = header.len() as u64;
        FileLayout {
            regions: regions.iter().map(|&(offset, len)| (start + offset, len)).collect(),
            total_len: start + data_len,
            header,
        }
    }

    /// Total file size in bytes.
    pub fn file_len(&self) -> u64 {
        self.total_len
    }

    /// Absolute offset of tensor `index`'s data.
    pub fn offset(&self, index: usize) -> Option<u64> {
        self.regions.get(index).map(|r| r.0)
    }

    /// The tensors' regions, (absolute offset, length).
    pub fn regions(&self) -> &[(u64, u64)] {
        &self.regions
    }
}

/// A file being written to its [`FileLayout`]: header in place, sized to its final
/// length, data filled in at offsets.
pub struct PositionedFile {
    path: PathBuf,
    file: File,
    layout: FileLayout,
}

impl PositionedFile {
    /// Creates (or truncates) `path`, writes the header and sizes the file.
    pub fn create(path: &Path, layout: FileLayout) -> Result<PositionedFile> {
        let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        file.write_all_at(&layout.header, 0)
            .and_then(|()| file.set_len(layout.total_len))
            .map_err(|e| Error::io("write", path, e))?;
        Ok(PositionedFile { path: path.to_owned(), file, layout })
    }

    /// Opens an earlier, unfinished write of the same layout to go on with it: `None`
    /// when `path` is missing, or its length or header differ from `layout`'s.
    pub fn reopen(path: &Path, layout: FileLayout) -> Result<Option<PositionedFile>> {
        let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
            return Ok(None);
        };
        let len = file.metadata().map_err(|e| Error::io("read", path, e))?.len();
        let mut header = vec![0u8; layout.header.len()];
        if len != layout.total_len || file.read_exact_at(&mut header, 0).is_err() {
            return Ok(None);
        }
        Ok((header == layout.header).then(|| PositionedFile {
            path: path.to_owned(),
            file,
            layout,
        }))
    }

    /// Writes `bytes` at `offset` within tensor `index`'s data; disjoint ranges may be
    /// written from several threads. A write outside the region is an error.
    pub fn write_at(&self, index: usize, offset: u64, bytes: &[u8]) -> Result<()> {
        let fits = |&(start, len): &(u64, u64)| {
            let end = offset.checked_add(bytes.len() as u64)?;
            (end <= len).then_some(start + offset)
        };
        let Some(at) = self.layout.regions.get(index).and_then(fits) else {
            return Err(Error::io(
                "write",
                &self.path,
                std::io::Error::other(format!(
                    "{} bytes at {offset} fall outside tensor {index}'s data region {:?}",
                    bytes.len(),
                    self.layout.regions.get(index)
                )),
            ));
        };
        self.file.write_all_at(bytes, at).map_err(|e| Error::io("write", &self.path, e))
    }

    /// Flushes the data written so far to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io("sync", &self.path, e))
    }

    /// Flushes the file to stable storage.
    pub fn finish(self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io("sync", &self.path, e))
    }
}

/// The files of a write that can go on from an interrupted one: each file reopened when
/// an earlier run wrote some of its tensors and its header and length still match the
/// layout (those tensors then kept), else created.
pub struct Parts {
    files: Vec<PositionedFile>,
    /// The file each tensor is in.
    part_of: Vec<usize>,
    /// Per tensor: whether the earlier run's bytes are kept.
    kept: Vec<bool>,
}

impl Parts {
    /// Opens `files` (each one's path and layout) for tensors placed by `part_of`;
    /// `earlier(i)` says whether an earlier run recorded tensor `i` as written.
    pub fn open(
        files: Vec<(PathBuf, FileLayout)>,
        part_of: &[usize],
        earlier: impl Fn(usize) -> bool,
    ) -> Result<Parts> {
        let mut kept = vec![false; part_of.len()];
        let mut opened = Vec::with_capacity(files.len());
        for (p, (path, layout)) in files.into_iter().enumerate() {
            let members = || (0..part_of.len()).filter(move |&i| part_of[i] == p);
            let reopened = match members().any(&earlier) {
                true => PositionedFile::reopen(&path, layout.clone())?,
                false => None,
            };
            if reopened.is_some() {
                members().for_each(|i| kept[i] = earlier(i));
            }
            opened.push(match reopened {
                Some(file) => file,
                None => PositionedFile::create(&path, layout)?,
            });
        }
        Ok(Parts { files: opened, part_of: part_of.to_vec(), kept })
    }

    /// Whether tensor `i`'s bytes from the earlier run are kept (not to be written).
    pub fn kept(&self, i: usize) -> bool {
        self.kept.get(i).copied().unwrap_or(false)
    }

    /// The file tensor `i` is written into.
    pub fn file_of(&self, i: usize) -> Option<&PositionedFile> {
        self.files.get(*self.part_of.get(i)?)
    }

    /// Makes the bytes of `tensors` durable: syncs the files that hold them, each once.
    pub fn sync(&self, tensors: &[usize]) -> Result<()> {
        let mut touched = vec![false; self.files.len()];
        for &i in tensors {
            if let Some(t) = self.part_of.get(i).and_then(|&p| touched.get_mut(p)) {
                *t = true;
            }
        }
        let mut synced = self.files.iter().zip(touched).filter(|(_, t)| *t);
        synced.try_for_each(|(file, _)| file.sync())
    }

    /// Flushes every file to stable storage.
    pub fn finish(self) -> Result<()> {
        self.files.into_iter().try_for_each(PositionedFile::finish)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> FileLayout {
        FileLayout::new(b"HEAD".to_vec(), &[(0, 3), (8, 2)], 16)
    }

    #[test]
    fn regions_are_filled_at_their_offsets_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = PositionedFile::create(&path, layout()).unwrap();
        file.write_at(1, 0, b"xy").unwrap();
        file.write_at(0, 1, b"bc").unwrap();
        let past = file.write_at(1, 1, b"yz").unwrap_err().to_string();
        assert!(past.contains("2 bytes at 1 fall outside tensor 1's data region"), "{past}");
        assert!(file.write_at(2, 0, b"").is_err(), "no tensor 2");
        file.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 20);
        assert_eq!(&bytes[..4], b"HEAD");
        assert_eq!(&bytes[5..7], b"bc");
        assert_eq!(&bytes[12..14], b"xy");
    }

    #[test]
    fn reopen_takes_only_the_same_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(PositionedFile::reopen(&path, layout()).unwrap().is_none(), "missing");
        let file = PositionedFile::create(&path, layout()).unwrap();
        file.write_at(0, 0, b"abc").unwrap();
        file.finish().unwrap();
        let other = FileLayout::new(b"HEAD".to_vec(), &[(0, 3), (8, 2)], 24);
        assert!(PositionedFile::reopen(&path, other).unwrap().is_none(), "another length");
        let other = FileLayout::new(b"HEAX".to_vec(), &[(0, 3), (8, 2)], 16);
        assert!(PositionedFile::reopen(&path, other).unwrap().is_none(), "another header");
        let again = PositionedFile::reopen(&path, layout()).unwrap().unwrap();
        again.write_at(1, 0, b"xy").unwrap();
        again.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[4..7], b"abc", "earlier data kept");
        assert_eq!(&bytes[12..14], b"xy");
    }
}
