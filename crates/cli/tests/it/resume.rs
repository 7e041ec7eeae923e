//! `merge --resume`: a folder merge interrupted (Ctrl-C, or killed outright) keeps its
//! recorded tensors, a resumed run gives the bytes of an uninterrupted one, and a partial
//! made from other inputs is refused.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use amalgam_tensors::journal::{FILE_NAME, Journal};

use crate::common::*;

/// Every file of a folder, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
        .collect()
}

/// Asserts that two folders hold the same files, byte for byte; names those that differ.
fn assert_same_files(label: &str, ours: &Path, theirs: &Path) {
    let (ours, theirs) = (files(ours), files(theirs));
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "{label}");
    let differ: Vec<&String> = ours.keys().filter(|k| ours[*k] != theirs[*k]).collect();
    assert!(differ.is_empty(), "{label}: {differ:?} differ");
}

/// The partial folders left beside `out`.
fn partials(out: &Path) -> Vec<PathBuf> {
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!(".{name}.amalgam-partial-");
    let entries = fs::read_dir(out.parent().unwrap()).unwrap().flatten();
    entries
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// `amalgam merge CONFIG OUT` run in `models`, with `extra` flags and, if given, the
/// interrupt test hook.
fn merge(models: &Path, config: &str, out: &Path, extra: &[&str], hook: Option<&str>) -> Output {
    let mut cmd = amalgam();
    cmd.current_dir(models).arg("merge").arg(data().join(config)).arg(out).arg("--quiet");
    cmd.args(extra);
    if let Some(hook) = hook {
        cmd.env("AMALGAM_TEST_INTERRUPT_AFTER", hook);
    }
    cmd.output().unwrap()
}

const TIES: &str = "methods/configs/ties.yml";

#[test]
fn an_interrupted_merge_resumed_gives_the_bytes_of_an_uninterrupted_one() {
    let models = data().join("methods/models");
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole/out");
    let shards = ["--out-shard-size", "200K"];
    let output = merge(&models, TIES, &whole, &shards, None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(files(&whole).len() > 3, "several shards: {:?}", files(&whole).keys());
    for (signal, after) in [("INT", 3), ("KILL", 10)] {
        let out = dir.path().join(signal).join("out");
        let output = merge(&models, TIES, &out, &shards, Some(&format!("{after}:{signal}")));
        let err = stderr(&output);
        match signal {
            "INT" => {
                assert_eq!(output.status.code(), Some(130), "{err}");
                assert!(err.contains("interrupted: kept the unfinished merge in"), "{err}");
            }
            _ => assert_eq!(output.status.signal(), Some(9), "{err}"),
        }
        assert!(!out.exists(), "{signal}: an unfinished merge is not in place");
        let [partial] = &partials(&out)[..] else { panic!("{signal}: {:?}", partials(&out)) };
        let recorded = Journal::read(&partial.join(FILE_NAME)).unwrap().done.len();
        assert!(recorded >= after, "{signal}: {recorded} recorded");

        let resumed = merge(&models, TIES, &out, &[&shards[..], &["--resume"]].concat(), None);
        let err = stderr(&resumed);
        assert!(resumed.status.success(), "{signal}: {err}");
        assert!(err.contains(&format!("{recorded} tensors are already written")), "{err}");
        assert_same_files(signal, &out, &whole);
        assert!(partials(&out).is_empty(), "{signal}: {:?}", partials(&out));
    }
}

/// The data of the tensor stored at `index` (in file order) of a safetensors file: its
/// byte range.
fn data_range(file: &Path, index: usize) -> std::ops::Range<usize> {
    let bytes = fs::read(file).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let mut ranges: Vec<(usize, usize)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| {
            let o = &v["data_offsets"];
            (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize)
        })
        .collect();
    ranges.sort();
    let (start, end) = ranges[index];
    8 + len + start..8 + len + end
}

#[test]
fn a_resumed_merge_keeps_what_was_recorded_and_redoes_the_rest() {
    let models = data().join("methods/models");
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole/out");
    let single = ["--out-shard-size", "0"];
    assert!(merge(&models, TIES, &whole, &single, None).status.success());
    let out = dir.path().join("out");
    let output = merge(&models, TIES, &out, &single, Some("5:KILL"));
    assert_eq!(output.status.signal(), Some(9), "{}", stderr(&output));
    let [partial] = &partials(&out)[..] else { panic!("{:?}", partials(&out)) };
    let done = Journal::read(&partial.join(FILE_NAME)).unwrap().done;
    // Mark one recorded tensor: a resumed run must keep it as it is.
    let shard = partial.join("model.safetensors");
    let first = *done.first().unwrap();
    let range = data_range(&shard, first);
    let mut bytes = fs::read(&shard).unwrap();
    bytes[range.start] ^= 0xff;
    fs::write(&shard, &bytes).unwrap();

    let resumed = merge(&models, TIES, &out, &[&single[..], &["--resume"]].concat(), None);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let (ours, theirs) = (files(&out), files(&whole));
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (name, bytes) in &theirs {
        if name != "model.safetensors" {
            assert!(ours[name] == *bytes, "{name} differs");
        }
    }
    let mut expected = theirs["model.safetensors"].clone();
    expected[range.start] ^= 0xff;
    assert!(ours["model.safetensors"] == expected, "only the marked byte differs");
}

#[test]
fn resume_refuses_a_partial_of_changed_inputs_and_a_fresh_merge_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for name in ["base", "ft_a", "ft_b", "ft_c"] {
        copy_model(&data().join("methods/models").join(name), &models.join(name));
    }
    let out = dir.path().join("out");
    let output = merge(&models, TIES, &out, &[], Some("2:KILL"));
    assert_eq!(output.status.signal(), Some(9), "{}", stderr(&output));
    let [partial] = &partials(&out)[..] else { panic!("{:?}", partials(&out)) };
    let changed = models.join("ft_b/config.json");
    let text = fs::read_to_string(&changed).unwrap();
    fs::write(&changed, format!("{text} ")).unwrap();

    let refused = merge(&models, TIES, &out, &["--resume"], None);
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    let expected = format!(
        "cannot resume the interrupted merge in {}: the input {} has changed (size or time) \
         since it was started. Run without --resume",
        partial.display(),
        changed.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(partial.exists(), "a refused resume keeps the partial");

    let fresh = merge(&models, TIES, &out, &[], None);
    let err = stderr(&fresh);
    assert!(fresh.status.success(), "{err}");
    assert!(err.contains("--resume would have finished it"), "{err}");
    assert!(!partial.exists() && out.join("model.safetensors").exists());

    let again = dir.path().join("again/out");
    let nothing = merge(&models, TIES, &again, &["--resume"], None);
    let err = stderr(&nothing);
    assert!(nothing.status.success(), "{err}");
    assert!(err.contains("no interrupted merge into"), "{err}");
    assert_same_files("again", &again, &out);
}

/// The files `out` (a `.gguf` path) was written as: itself, or its split parts.
fn gguf_files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let stem = out.file_stem().unwrap().to_string_lossy().into_owned();
    let entries = fs::read_dir(out.parent().unwrap()).unwrap().flatten();
    entries
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| name.starts_with(&stem) && name.ends_with(".gguf"))
        .map(|(name, path)| (name, fs::read(path).unwrap()))
        .collect()
}

#[test]
fn an_interrupted_gguf_merge_resumed_gives_the_bytes_of_an_uninterrupted_one() {
    let models = data().join("methods/models");
    let dir = tempfile::tempdir().unwrap();
    let split = ["--quant", "Q8_0", "--split-max-size", "150K"];
    let whole = dir.path().join("whole/out.gguf");
    let output = merge(&models, TIES, &whole, &split, None);
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = gguf_files(&whole);
    assert!(expected.len() > 1, "split parts: {:?}", expected.keys());
    for (signal, after) in [("INT", 3), ("KILL", 10)] {
        let out = dir.path().join(signal).join("out.gguf");
        let output = merge(&models, TIES, &out, &split, Some(&format!("{after}:{signal}")));
        let err = stderr(&output);
        match signal {
            "INT" => assert!(err.contains("interrupted: kept the unfinished merge in"), "{err}"),
            _ => assert_eq!(output.status.signal(), Some(9), "{err}"),
        }
        assert!(gguf_files(&out).is_empty(), "{signal}: nothing unfinished is in place");
        let [partial] = &partials(&out)[..] else { panic!("{signal}: {:?}", partials(&out)) };
        let recorded = Journal::read(&partial.join(FILE_NAME)).unwrap().done.len();
        assert!(recorded >= after, "{signal}: {recorded} recorded");

        // Another output in the same folder leaves this one's partial alone.
        let other = out.with_file_name("other.gguf");
        assert!(merge(&models, TIES, &other, &split, None).status.success(), "{signal}");
        assert_eq!(partials(&out).len(), 1, "{signal}: another output's merge removed it");
        // Another mixture is another file: refused, the partial kept.
        let other = ["--quant", "Q4_0", "--split-max-size", "150K", "--resume"];
        let refused = merge(&models, TIES, &out, &other, None);
        assert!(stderr(&refused).contains("--quant has changed"), "{}", stderr(&refused));
        assert_eq!(partials(&out).len(), 1, "{signal}: the partial is kept");

        // Mark a recorded tensor in the partial: a resume that keeps it keeps the mark.
        let marked = mark_recorded(partial, &whole);
        let resumed = merge(&models, TIES, &out, &[&split[..], &["--resume"]].concat(), None);
        let err = stderr(&resumed);
        assert!(resumed.status.success(), "{signal}: {err}");
        assert!(err.contains(&format!("{recorded} tensors are already written")), "{err}");
        let mut got = gguf_files(&out);
        let (part, at) = marked;
        let bytes = got.get_mut(&part).unwrap();
        assert_ne!(
            bytes[at], expected[&part][at],
            "{signal}: the recorded tensor was merged again"
        );
        bytes[at] ^= 0xFF;
        assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        assert!(got == expected, "{signal}: the parts differ");
        assert!(partials(&out).is_empty(), "{signal}: {:?}", partials(&out));
    }
}

/// Flips the first byte of the first tensor the journal in `partial` records (found by its
/// bytes in the uninterrupted output beside `whole`); returns the part and the offset.
fn mark_recorded(partial: &Path, whole: &Path) -> (String, usize) {
    let first = *Journal::read(&partial.join(FILE_NAME)).unwrap().done.iter().next().unwrap();
    let mut tensors = Vec::new();
    for name in gguf_files(whole).keys() {
        let file = amalgam_gguf::GgufFile::open(&whole.with_file_name(name)).unwrap();
        for t in &file.header.tensors {
            tensors.push((name.clone(), file.data(t).to_vec()));
        }
    }
    let (part, data) = &tensors[first];
    let staged = partial.join(part);
    let mut bytes = fs::read(&staged).unwrap();
    let at = bytes.windows(data.len()).position(|w| w == data.as_slice()).unwrap();
    bytes[at] ^= 0xFF;
    fs::write(&staged, bytes).unwrap();
    (part.clone(), at)
}
