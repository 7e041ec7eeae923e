//! `amalgam merge --eval-file`: the card's "Merge quality" section holds what `amalgam
//! perplexity` measures on the merge and its base, and quotes a search's leaderboard line;
//! a measurement that fails leaves no output.

use std::fs;
use std::path::Path;

use crate::common::*;

/// A self-merge of the 8-layer tiny-kq model to 12 layers, after `comment`.
fn config(dir: &Path, comment: &str) -> std::path::PathBuf {
    let model = serde_json::to_string(&data().join("gguf/tiny-kq").display().to_string()).unwrap();
    let yaml = format!(
        "{comment}slices:\n- sources: [{{model: {model}, layer_range: [0, 6]}}]\n- sources: [{{model: {model}, layer_range: [2, 8]}}]\n  parameters:\n    scale:\n      - filter: o_proj\n        value: 0.5\n      - filter: down_proj\n        value: 0.5\n      - value: 1.0\nmerge_method: passthrough\ndtype: bfloat16\n"
    );
    let path = dir.join("merge.yml");
    fs::write(&path, yaml).unwrap();
    path
}

/// `amalgam perplexity MODEL` as the card measures: windows of 512, two of them.
fn final_line(model: &Path, text: &Path) -> String {
    let mut cmd = amalgam();
    cmd.arg("perplexity").arg(model).arg("-f").arg(text).args(["--chunks", "2", "-q"]);
    let out = String::from_utf8(run_ok(&mut cmd).stdout).unwrap();
    let line = out.lines().find(|l| l.starts_with("Final estimate")).unwrap().to_owned();
    // "Final estimate: PPL = 12.3456 +/- 0.12345" → "12.3456"
    line.split_whitespace().nth(4).unwrap().to_owned()
}

#[test]
fn the_card_reports_the_perplexity_of_the_merge_and_its_base() {
    let tmp = tempfile::tempdir().unwrap();
    let text = gpl3(tmp.path(), 16384);
    let search_line = "# amalgam search: 8 -> 12 layers; held-out PPL 9.8765 (4 windows)\n# 12 candidates in 30 s, seed 1\n";
    let config = config(tmp.path(), search_line);
    let out = tmp.path().join("merged");
    let mut cmd = amalgam();
    cmd.arg("merge").arg(&config).arg(&out).arg("--eval-file").arg(&text);
    run_ok(cmd.args(["--eval-chunks", "2"]));
    let card = fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains("## Merge quality\n\nPerplexity on `gpl3.txt` (2 windows of 512"),
        "{card}"
    );
    let merged = final_line(&out, &text);
    let base = final_line(&data().join("gguf/tiny-kq"), &text);
    assert_ne!(merged, base);
    assert!(card.contains(&format!("| this merge | 12 | {merged} ± ")), "{merged}: {card}");
    assert!(card.contains(&format!("tiny-kq (base) | 8 | {base} ± ")), "{base}: {card}");
    assert!(
        card.contains("reported:\n\n> amalgam search: 8 -> 12 layers; held-out PPL 9.8765 (4 windows)  \n> 12 candidates in 30 s, seed 1  \n"),
        "{card}"
    );
}

#[test]
fn a_failed_measurement_leaves_no_output_and_a_gguf_output_has_no_card() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), "");
    let out = tmp.path().join("merged");
    let mut cmd = amalgam();
    cmd.arg("merge").arg(&config).arg(&out).arg("--eval-file").arg(tmp.path().join("none.txt"));
    let err = error_of(&mut cmd);
    assert!(err.contains("evaluating the merge") && err.contains("none.txt"), "{err}");
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["merge.yml"], "nothing staged or written is left");

    let mut cmd = amalgam();
    let gguf = tmp.path().join("merged.gguf");
    cmd.arg("merge").arg(&config).arg(&gguf).arg("--eval-file").arg(tmp.path().join("t.txt"));
    let err = error_of(&mut cmd);
    assert!(
        err.contains("a GGUF output has no card") && err.contains("amalgam perplexity"),
        "{err}"
    );
}
