//! llama.cpp's KL-divergence base file (`llama-perplexity --kl-divergence-base`): a
//! reference model's log-probabilities at every scored position, each row quantized to
//! 16 bits over its top 16 nats, so one reference pass serves many comparisons, and files
//! pass between amalgam and llama.cpp both ways.
//!
//! Layout (little-endian): `_logits_`; i32 ctx, vocab, chunks; `chunks·ctx` i32 tokens
//! (as in the text, no BOS put in); then, per chunk, `ctx − 1 − ctx/2` records of
//! `2·⌈vocab/2⌉ + 4` u16: f32 scale, f32 minimum log-probability, one u16 per token
//! (log p = scale·q + minimum), padded to an even count.

// Untrusted bytes are parsed here: every index is checked.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"_logits_";

/// Log-probabilities more than this far below the most likely token's are stored as the
/// minimum.
pub const RANGE: f32 = 16.0;

/// What a file holds besides its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub ctx: usize,
    pub vocab: usize,
    pub chunks: usize,
    /// `chunks · ctx` tokens.
    pub tokens: Vec<u32>,
}

impl Header {
    /// u16 values per record.
    pub fn record_len(&self) -> usize {
        record_len(self.vocab)
    }

    /// Records per chunk: the scored positions of a window.
    pub fn records_per_chunk(&self) -> usize {
        self.ctx - 1 - self.ctx / 2
    }
}

/// u16 values per record of a `vocab`-token row.
pub fn record_len(vocab: usize) -> usize {
    2 * vocab.div_ceil(2) + 4
}

/// Quantizes one row of logits into a record (`record_len(logits.len())` long), as
/// llama.cpp's writer does: the row's log-softmax over `[max − 16, max]` in 65535 steps.
pub fn quantize_row(logits: &[f32], record: &mut [u16]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
    let min = logits.iter().fold(f32::INFINITY, |m, &l| m.min(l)).max(max - RANGE);
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let Some((head, q)) = record.split_first_chunk_mut::<4>() else { return };
    let ([s0, s1], [m0, m1]) = (halves(scale), halves(min_log_prob));
    *head = [s0, s1, m0, m1];
    q.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (q, &l) in q.iter_mut().zip(logits) {
            if l > min {
                *q = nearest(inv * (l - min));
            }
        }
    }
}

/// `x` rounded to the nearest integer, ties to even, as ggml's `nearest_int`, clamped to
/// u16.
fn nearest(x: f32) -> u16 {
    x.round_ties_even().clamp(0.0, 65535.0) as u16
}

fn halves(x: f32) -> [u16; 2] {
    let b = x.to_le_bytes();
    [u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]])]
}

/// A record's parts: scale, minimum log-probability, and the quantized values.
pub fn split_record(record: &[u16]) -> (f32, f32, &[u16]) {
    let float = |a: u16, b: u16| {
        let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
        f32::from_le_bytes([a[0], a[1], b[0], b[1]])
    };
    match record {
        [s0, s1, m0, m1, q @ ..] => (float(*s0, *s1), float(*m0, *m1), q),
        _ => (0.0, 0.0, &[]),
    }
}

/// Writes a base file chunk by chunk, under a hidden name beside its path until
/// [`LogitsWriter::finish`] renames it into place (an unfinished one is removed).
pub struct LogitsWriter {
    out: BufWriter<File>,
    partial: PathBuf,
    /// Lists the partial for an interrupt handler to remove.
    _tracked: amalgam_tensors::partial::Tracked,
    path: PathBuf,
    finished: bool,
}

impl LogitsWriter {
    /// Starts the file for `path` and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<LogitsWriter> {
        let partial = amalgam_tensors::partial::sibling(path, "partial");
        let io = |e: std::io::Error| Error::Invalid(format!("writing {}: {e}", path.display()));
        let out = BufWriter::new(File::create(&partial).map_err(io)?);
        let _tracked = amalgam_tensors::partial::track(&partial);
        let mut w = LogitsWriter { out, partial, _tracked, path: path.to_owned(), finished: false };
        let int = |n: usize| i32::try_from(n).map(i32::to_le_bytes);
        let too_big = |_| Error::Invalid(format!("{}: sizes past i32", path.display()));
        w.out.write_all(MAGIC).map_err(io)?;
        for n in [header.ctx, header.vocab, header.chunks] {
            w.out.write_all(&int(n).map_err(too_big)?).map_err(io)?;
        }
        for &t in &header.tokens {
            w.out.write_all(&t.to_le_bytes()).map_err(io)?;
        }
        Ok(w)
    }

    fn failed(&self, e: std::io::Error) -> Error {
        Error::Invalid(format!("writing {}: {e}", self.path.display()))
    }

    /// Appends records.
    pub fn write(&mut self, records: &[u16]) -> Result<()> {
        let bytes: Vec<u8> = records.iter().flat_map(|r| r.to_le_bytes()).collect();
        self.out.write_all(&bytes).map_err(|e| self.failed(e))
    }

    /// Flushes the file, syncs it and renames it into place.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.failed(e))?;
        amalgam_tensors::partial::commit(&self.partial, &self.path)?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for LogitsWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Reads a base file chunk by chunk, checking its size against its header first.
pub struct LogitsReader {
    input: BufReader<File>,
    pub header: Header,
    path: PathBuf,
}

impl LogitsReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<LogitsReader> {
        let bad =
            |reason: String| Error::Invalid(format!("logits file {}: {reason}", path.display()));
        let file = File::open(path).map_err(|e| bad(e.to_string()))?;
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        let mut input = BufReader::new(file);
        let mut head = [0u8; 20];
        input.read_exact(&mut head).map_err(|_| bad("too short for a header".into()))?;
        if !head.starts_with(MAGIC) {
            return Err(bad(
                "does not start with _logits_ (not a llama.cpp KL-divergence base file)".into(),
            ));
        }
        let int = |i: usize| {
            let v = head.get(i..i + 4).and_then(|b| b.try_into().ok()).map(i32::from_le_bytes);
            let v = v.ok_or_else(|| bad("too short for a header".into()))?;
            usize::try_from(v).map_err(|_| bad(format!("negative size {v} in the header")))
        };
        let (ctx, vocab, chunks) = (int(8)?, int(12)?, int(16)?);
        if ctx < 4 || vocab == 0 {
            return Err(bad(format!("context {ctx} and vocabulary {vocab} are not a model's")));
        }
        let n_tokens = ctx.checked_mul(chunks).ok_or_else(|| bad("sizes overflow".into()))?;
        let records = (ctx - 1 - ctx / 2) as u64 * chunks as u64;
        let want = 20 + 4 * n_tokens as u64 + records * 2 * record_len(vocab) as u64;
        if len != want {
            return Err(bad(format!(
                "holds {len} bytes; its header ({chunks} chunks of {ctx}, vocabulary {vocab}) \
                 needs {want} (is it complete?)"
            )));
        }
        let mut bytes = vec![0u8; 4 * n_tokens];
        input.read_exact(&mut bytes).map_err(|e| bad(e.to_string()))?;
        let tokens = bytes.as_chunks::<4>().0.iter().map(|b| u32::from_le_bytes(*b)).collect();
        let header = Header { ctx, vocab, chunks, tokens };
        Ok(LogitsReader { input, header, path: path.to_owned() })
    }

    /// The next chunk's records into `records` (resized to a chunk's worth).
    pub fn read_chunk(&mut self, records: &mut Vec<u16>) -> Result<()> {
        let n = self.header.records_per_chunk() * self.header.record_len();
        let mut bytes = vec![0u8; 2 * n];
        self.input
            .read_exact(&mut bytes)
            .map_err(|e| Error::Invalid(format!("logits file {}: {e}", self.path.display())))?;
        records.clear();
        records.extend(bytes.as_chunks::<2>().0.iter().map(|b| u16::from_le_bytes(*b)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_the_log_softmax_within_its_step() {
        let logits: Vec<f32> =
            (0..11).map(|i| (i as f32 * 0.37).sin() * 5.0 - 20.0 * f32::from(i == 3)).collect();
        let mut record = vec![0u16; record_len(logits.len())];
        assert_eq!(record.len(), 16);
        quantize_row(&logits, &mut record);
        let (scale, min, q) = split_record(&record);
        let max = logits.iter().fold(f32::MIN, |m, &l| m.max(l));
        let lse = logits.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>().ln() as f32;
        for (i, &l) in logits.iter().enumerate() {
            let exact = (l - max - lse).max(min);
            let stored = scale * f32::from(q[i]) + min;
            assert!((stored - exact).abs() <= scale * 0.5 + 1e-5, "{i}: {stored} vs {exact}");
        }
        assert_eq!(q[3], 0, "more than 16 below the top: the minimum");
        assert_eq!(record[15], 0, "padding");
    }

    #[test]
    fn a_file_reads_back_and_a_cut_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("amalgam-logits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("base.kld");
        let header = Header { ctx: 8, vocab: 3, chunks: 2, tokens: (0..16).collect() };
        let mut w = LogitsWriter::create(&path, &header).unwrap();
        let chunk: Vec<u16> = (0..3 * 8).map(|v| v as u16).collect();
        w.write(&chunk).unwrap();
        w.write(&chunk).unwrap();
        w.finish().unwrap();
        let mut r = LogitsReader::open(&path).unwrap();
        assert_eq!(r.header, header);
        let mut got = Vec::new();
        r.read_chunk(&mut got).unwrap();
        assert_eq!(got, chunk);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = LogitsReader::open(&path).err().unwrap().to_string();
        assert!(err.contains("needs") && err.contains("is it complete"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
