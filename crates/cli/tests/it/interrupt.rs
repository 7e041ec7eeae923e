//! Interrupted writes leave nothing behind: Ctrl-C or SIGTERM removes the partial output
//! and exits with 130, and a partial a dead process left is removed on the next run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Waits until `path` exists while `child` runs.
fn wait_for(path: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("amalgam ended ({status}) before {} appeared", path.display());
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_interrupted_quantization_removes_its_partial_and_exits_130() {
    for signal in ["-INT", "-TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.gguf");
        let mut child = amalgam()
            .arg("quantize")
            .arg(smollm2())
            .arg(&out)
            .args(["--quant", "Q4_K_M", "--quiet"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let partial = dir.path().join(format!(".out.gguf.amalgam-partial-{}", child.id()));
        wait_for(&partial, &mut child);
        let sent = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(sent.success());
        let output = child.wait_with_output().unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(130), "{signal}: {err}");
        assert!(
            err.contains(&format!("interrupted: removed the unfinished {}", partial.display())),
            "{signal}: {err}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{signal}: left {left:?}");
    }
}

#[test]
fn a_partial_left_by_a_dead_process_is_removed_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = dir.path().join(format!(".out.gguf.amalgam-partial-{pid}"));
    std::fs::write(&stale, b"half a file").unwrap();
    let out = dir.path().join("out.gguf");
    let output = run_ok(
        amalgam()
            .arg("quantize")
            .arg(data().join("gguf/tiny-kq"))
            .arg(&out)
            .args(["--quant", "Q8_0", "--quiet"]),
    );
    let note = format!(
        "note: removed {}, left unfinished by amalgam process {pid}, which is no longer running",
        stale.display()
    );
    assert!(stderr(&output).contains(&note), "{}", stderr(&output));
    assert!(!stale.exists());
    assert!(out.exists());
}
