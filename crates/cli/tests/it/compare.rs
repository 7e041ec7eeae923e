//! `amalgam compare`: a model against itself diverges by no more than the stored
//! precision, a saved reference gives the live reference's figures, and models of
//! different vocabularies are refused.

use std::fs;
use std::path::PathBuf;

use crate::common::*;

/// `amalgam compare` with `args`, windows of 128, two of them: stdout.
fn compare(args: &[&std::ffi::OsStr]) -> String {
    let mut cmd = amalgam();
    // From the repository root, where the example configs' model paths start.
    cmd.current_dir(data().join("../.."));
    cmd.arg("compare").args(args).args(["-c", "128", "--chunks", "2"]);
    String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
}

/// The number after `label` in the summary.
fn figure(out: &str, label: &str) -> f64 {
    let line =
        out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label}: {out}"));
    let value =
        line[label.len()..].trim_start_matches([' ', ':']).split([' ', '%']).next().unwrap();
    value.parse().unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn a_model_against_itself_agrees_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = (smollm2(), gpl3(tmp.path(), 16384));
    let out = compare(&[model.as_os_str(), model.as_os_str(), "-f".as_ref(), text.as_os_str()]);
    assert_eq!(figure(&out, "Same top p"), 100.0, "{out}");
    assert!(figure(&out, "Mean    KLD").abs() < 1e-4, "{out}");
    assert!(figure(&out, "Maximum KLD").abs() < 1e-3, "{out}");
    // The reference's side is stored in 16-bit steps: the ratio is 1 to that precision.
    assert!((figure(&out, "Mean PPL(Q)/PPL(base)") - 1.0).abs() < 1e-4, "{out}");
    assert_eq!(figure(&out, "Cor(ln(PPL(Q)), ln(PPL(base)))"), 100.0, "{out}");
}

#[test]
fn a_saved_reference_gives_the_live_figures_and_the_merge_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, text) = (smollm2(), gpl3(tmp.path(), 16384));
    let merge = PathBuf::from("examples/smollm2-self-merge.yml");
    let saved = tmp.path().join("base.kld");
    let live = compare(&[
        merge.as_os_str(),
        base.as_os_str(),
        "-f".as_ref(),
        text.as_os_str(),
        "--save-logits".as_ref(),
        saved.as_os_str(),
    ]);
    // 20 bytes of header, 256 tokens, 2 × 63 records of 49152 + 4 values.
    assert_eq!(fs::metadata(&saved).unwrap().len(), 20 + 4 * 256 + 2 * 63 * 2 * 49156);
    let reused = compare(&[merge.as_os_str(), "--logits".as_ref(), saved.as_os_str()]);
    assert_eq!(live, reused);
    assert!(figure(&live, "Mean    KLD") > 0.1, "{live}");
    assert!(figure(&live, "Same top p") < 90.0, "{live}");
    assert!(figure(&live, "Mean PPL(Q)/PPL(base)") > 1.5, "{live}");
}

#[test]
fn another_vocabulary_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = gpl3(tmp.path(), 16384);
    let tiny = data().join("methods/models/base");
    let mut cmd = amalgam();
    cmd.arg("compare").arg(&tiny).arg(smollm2()).arg("-f").arg(&text);
    let err = error_of(&mut cmd);
    assert!(err.contains("tokenize the text differently"), "{err}");
}
