//! `amalgam search`: a short run is reproducible with --seed and --max-evals, an
//! interrupted one resumed from its log makes the same choices, and the config it writes
//! measures, run virtually, what the search measured.

use std::fs;

use crate::common::*;

/// A short search of SmolLM2 taken to 34 layers (its log beside `out`): what it scored
/// and wrote, less timings and whether a score came from the log.
fn short_search(
    dir: &std::path::Path,
    out: &std::path::Path,
    evals: &str,
    more: &[&str],
) -> String {
    let text = gpl3(dir, 24576);
    let mut cmd = amalgam();
    cmd.arg("search").arg(smollm2()).args(["--layers", "34", "-f"]).arg(&text);
    cmd.args(["-c", "64", "--max-evals", evals, "--seed", "3", "--calibration", "2"]);
    cmd.args(["--held-out", "2", "--confirm", "2", "--out"]).arg(out).args(more);
    let stdout = String::from_utf8(run_ok(&mut cmd).stdout).unwrap();
    // Each candidate's line less the clock ("[1/4, 2 s, ETA 6 s]"), then the config
    // written less its comment (which has the run's time).
    let mut kept: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
        .map(|l| l.replacen(", from the log", "", 1))
        .collect();
    let yaml = fs::read_to_string(out).unwrap();
    kept.extend(yaml.lines().filter(|l| !l.starts_with('#')).map(str::to_owned));
    kept.join("\n")
}

#[test]
fn a_seeded_search_repeats_and_its_best_config_measures_what_it_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a.yml"), tmp.path().join("b.yml"), tmp.path().join("c.yml"));
    let first = short_search(tmp.path(), &a, "4", &[]);
    assert_eq!(
        first,
        short_search(tmp.path(), &b, "4", &[]),
        "the same seed gives the same search"
    );
    // Two candidates, "interrupted", then resumed to four: the same four, the first two
    // from the log.
    short_search(tmp.path(), &c, "2", &[]);
    let log = fs::read_to_string(tmp.path().join("c.yml.log")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"calibration ")).count(), 2, "{log}");
    assert_eq!(first, short_search(tmp.path(), &c, "4", &["--resume"]), "resumed differently");
    let err = error_of(
        amalgam()
            .arg("search")
            .arg(smollm2())
            .args(["--layers", "34", "-f"])
            .arg(tmp.path().join("gpl3.txt"))
            .args(["-c", "64", "--seed", "4", "--held-out", "2", "--out"])
            .arg(&c)
            .arg("--resume"),
    );
    assert!(err.contains("seed = 3, this one 4"), "{err}");
    let best = fs::read_to_string(&a).unwrap();
    assert!(best.starts_with("# amalgam search: 30 -> 34 layers; calibration PPL "), "{best}");
    let reported: f64 = best["# amalgam search: 30 -> 34 layers; calibration PPL ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut cmd = amalgam();
    cmd.arg("perplexity").arg(&a).arg("-f").arg(tmp.path().join("gpl3.txt"));
    cmd.args(["-c", "64", "--chunks", "2", "-q"]);
    let out = String::from_utf8(run_ok(&mut cmd).stdout).unwrap();
    assert!(out.contains(&format!("Final estimate: PPL = {reported:.4}")), "{reported}: {out}");
}
