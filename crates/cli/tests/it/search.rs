//! `amalgam search`: a short run is reproducible with --seed and --max-evals, and the
//! config it writes measures, run virtually, what the search measured.

use std::fs;

use crate::common::*;

/// A short search of SmolLM2 taken to 34 layers: what it scored and wrote, less timings.
fn short_search(dir: &std::path::Path, out: &std::path::Path) -> String {
    let text = gpl3(dir, 24576);
    let mut cmd = amalgam();
    cmd.arg("search").arg(smollm2()).args(["--layers", "34", "-f"]).arg(&text);
    cmd.args(["-c", "64", "--max-evals", "4", "--seed", "3", "--calibration", "2"]);
    cmd.args(["--held-out", "2", "--confirm", "2", "--out"]).arg(out);
    let stdout = String::from_utf8(run_ok(&mut cmd).stdout).unwrap();
    // Each candidate's line less the clock ("[1/4, 2 s, ETA 6 s]"), then the config
    // written less its comment (which has the run's time).
    let mut kept: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
        .collect();
    let yaml = fs::read_to_string(out).unwrap();
    kept.extend(yaml.lines().filter(|l| !l.starts_with('#')));
    kept.join("\n")
}

#[test]
fn a_seeded_search_repeats_and_its_best_config_measures_what_it_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.yml"), tmp.path().join("b.yml"));
    let first = short_search(tmp.path(), &a);
    assert_eq!(first, short_search(tmp.path(), &b), "the same seed gives the same search");
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
