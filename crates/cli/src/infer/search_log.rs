//! The log `amalgam search` keeps of every score it measured, one JSON line each after a
//! header of the settings that decide the scores, so an interrupted search continues
//! (`--resume`) by replaying the same choices with the logged scores.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

/// What one measurement cost and gave.
#[derive(Clone, Copy, Debug)]
pub struct Score {
    pub ppl: f64,
    pub seconds: f64,
}

/// Scores by key (`calibration <layout>`, `held-out <layout>`, …), read from the log and
/// appended to it as they are measured.
pub struct Memo {
    scores: HashMap<String, Score>,
    file: Option<(PathBuf, File)>,
}

impl Memo {
    /// No log: scores are only kept in memory.
    pub fn in_memory() -> Memo {
        Memo { scores: HashMap::new(), file: None }
    }

    /// Opens the log at `path` for a search with `settings`: a new log when `resume` is
    /// false (an existing non-empty one is an error, not overwritten), else the scores of
    /// the earlier run, whose settings must be these.
    pub fn open(path: &Path, settings: &Map<String, Value>, resume: bool) -> Result<Memo> {
        let shown = path.display();
        let existing = std::fs::read_to_string(path).unwrap_or_default();
        let mut scores = HashMap::new();
        if resume {
            if existing.is_empty() {
                bail!("--resume: {shown} has no earlier search to continue");
            }
            scores = replay(&existing, settings).with_context(|| format!("--resume: {shown}"))?;
        } else if !existing.is_empty() {
            bail!(
                "{shown} holds an earlier search's log; pass --resume to continue it, or remove \
                 it (or name another with --log)"
            );
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {shown}"))?;
        if existing.is_empty() {
            writeln!(file, "{}", Value::Object(settings.clone()))
                .with_context(|| format!("writing {shown}"))?;
        } else if !existing.ends_with('\n') {
            // A line torn by an interruption: cut it off, so the next one starts clean.
            let whole = existing.rfind('\n').map_or(0, |i| i + 1);
            file.set_len(whole as u64).with_context(|| format!("writing {shown}"))?;
        }
        Ok(Memo { scores, file: Some((path.to_owned(), file)) })
    }

    /// Scores logged or measured so far.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// The score under `key`, measuring it with `measure` (and logging it) when unknown;
    /// `true` with it when it came from the log.
    pub fn get_or_measure(
        &mut self,
        key: &str,
        measure: impl FnOnce() -> Result<Score>,
    ) -> Result<(Score, bool)> {
        if let Some(&score) = self.scores.get(key) {
            return Ok((score, true));
        }
        let score = measure()?;
        if let Some((path, file)) = &mut self.file {
            let line = json!({"key": key, "ppl": score.ppl, "seconds": score.seconds});
            writeln!(file, "{line}")
                .and_then(|()| file.flush())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        self.scores.insert(key.to_owned(), score);
        Ok((score, false))
    }
}

/// The scores of a log written with `settings`; a setting that differs is an error naming
/// it, a last line torn by an interruption is skipped.
fn replay(text: &str, settings: &Map<String, Value>) -> Result<HashMap<String, Score>> {
    let mut lines = text.lines();
    let header: Map<String, Value> = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .context("the first line is not a search's settings")?;
    for (key, value) in settings {
        let logged = header.get(key).unwrap_or(&Value::Null);
        if logged != value {
            bail!("the log's search had {key} = {logged}, this one {value}; resume with the same");
        }
    }
    let mut scores = HashMap::new();
    let count = text.lines().count();
    for (i, line) in lines.enumerate() {
        let entry: Result<(String, Score)> = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| {
                let score = Score { ppl: v["ppl"].as_f64()?, seconds: v["seconds"].as_f64()? };
                Some((v["key"].as_str()?.to_owned(), score))
            })
            .context("not a score");
        match entry {
            Ok((key, score)) => {
                scores.insert(key, score);
            }
            Err(_) if i + 2 == count => {} // torn by an interruption
            Err(e) => return Err(e).with_context(|| format!("line {}", i + 2)),
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u64) -> Map<String, Value> {
        let Value::Object(map) = json!({"layers": 50, "seed": seed}) else { unreachable!() };
        map
    }

    #[test]
    fn a_log_replays_its_scores_and_refuses_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut memo = Memo::open(&path, &settings(1), false).unwrap();
        let score = || Ok(Score { ppl: 20.5, seconds: 3.0 });
        assert!(!memo.get_or_measure("calibration a", score).unwrap().1);
        drop(memo);
        // A torn line from an interruption is skipped.
        std::fs::write(&path, std::fs::read_to_string(&path).unwrap() + "{\"key\": \"cal").unwrap();

        let err = Memo::open(&path, &settings(1), false).err().unwrap();
        assert!(format!("{err:#}").contains("pass --resume"), "{err:#}");
        let err = Memo::open(&path, &settings(2), true).err().unwrap();
        assert!(format!("{err:#}").contains("seed = 1, this one 2"), "{err:#}");

        let mut memo = Memo::open(&path, &settings(1), true).unwrap();
        let (got, logged) = memo.get_or_measure("calibration a", || unreachable!()).unwrap();
        assert!(logged && got.ppl == 20.5 && got.seconds == 3.0);
        assert!(!memo.get_or_measure("calibration b", score).unwrap().1);
        drop(memo);
        let memo = Memo::open(&path, &settings(1), true).unwrap();
        assert_eq!(memo.len(), 2);
    }
}
