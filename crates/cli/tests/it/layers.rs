//! `amalgam layers`: a layer made an identity (its o_proj and down_proj scaled to zero, run
//! as a virtual merge) changes nothing and is named the most redundant, and the suggested
//! config merges.

use std::fs;

use crate::common::*;

#[test]
fn an_identity_layer_is_named_most_redundant_and_the_suggestion_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let text = gpl3(tmp.path(), 16384);
    let base =
        serde_json::to_string(&data().join("methods/models/base").display().to_string()).unwrap();
    let config = tmp.path().join("identity.yml");
    let yaml = format!(
        "models:\n- model: {base}\n  parameters:\n    scale:\n    - filter: layers.3.self_attn.o_proj\n      value: 0\n    - filter: layers.3.mlp.down_proj\n      value: 0\nmerge_method: passthrough\n"
    );
    fs::write(&config, yaml).unwrap();
    // The virtual run measures it; the suggestion needs a model, so the merge is written.
    let virt = run_ok(
        amalgam()
            .arg("layers")
            .arg(&config)
            .arg("-f")
            .arg(&text)
            .args(["-c", "128", "--chunks", "2"]),
    );
    let virt = String::from_utf8(virt.stdout).unwrap();
    assert!(virt.contains("\n    3   0.00000\n"), "{virt}");
    let identity = tmp.path().join("identity");
    run_ok(amalgam().arg("merge").arg(&config).arg(&identity).arg("--quiet"));
    let prefix = tmp.path().join("suggested");
    let out = run_ok(
        amalgam()
            .arg("layers")
            .arg(&identity)
            .arg("-f")
            .arg(&text)
            .args(["-c", "128", "--chunks", "2", "--out"])
            .arg(&prefix),
    );
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.contains("\n    3   0.00000\n"), "{out}");
    assert!(out.contains("   1 layers: 3..4 (0.00000)"), "{out}");
    let changes: Vec<f64> = out
        .lines()
        .skip(1)
        .take(6)
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(changes.iter().enumerate().all(|(i, c)| (i == 3) == (*c == 0.0)), "{changes:?}");
    let svg = fs::read_to_string(prefix.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("change across spans"), "{svg}");
    let png = fs::read(prefix.with_extension("png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 2000);
    let suggested = prefix.with_extension("yml");
    assert!(fs::read_to_string(&suggested).unwrap().contains("merge_method: passthrough"));
    let merged = tmp.path().join("merged");
    run_ok(amalgam().arg("merge").arg(&suggested).arg(&merged).arg("--quiet"));
    assert_eq!(json(&merged.join("config.json"))["num_hidden_layers"], 8, "6 layers + a third");
}
