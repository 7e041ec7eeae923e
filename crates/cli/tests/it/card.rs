//! The model card: front matter from the inputs (license, hub base models), the method
//! sentence as mergekit words it, and the layer table of frankenmerges.

use std::fs;

use crate::common::*;

/// Merges `yaml` over scratch copies of `base` (with a licensed card) and `ft_a`; returns
/// the card.
fn card_for(yaml: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    for model in ["base", "ft_a"] {
        copy_model(&data().join("methods/models").join(model), &tmp.path().join(model));
    }
    fs::write(
        tmp.path().join("base/README.md"),
        "---\nlicense: apache-2.0\nlanguage: [en]\n---\n# base\n",
    )
    .unwrap();
    fs::write(tmp.path().join("config.yml"), yaml).unwrap();
    run_ok(amalgam().current_dir(tmp.path()).args(["merge", "config.yml", "my-merge", "--quiet"]));
    fs::read_to_string(tmp.path().join("my-merge/README.md")).unwrap()
}

#[test]
fn slerp_card_lists_both_models_and_the_source_license() {
    let card = card_for(
        "merge_method: slerp\nbase_model: base\nslices:\n- sources:\n  - {model: base, layer_range: [0, 6]}\n  - {model: ft_a, layer_range: [0, 6]}\nparameters: {t: 0.5}\n",
    );
    let front = card.split("---\n").nth(1).unwrap();
    assert!(front.contains("license: apache-2.0\n"), "{front}");
    assert!(!front.contains("base_model"), "local folders are not hub base models: {front}");
    assert!(card.contains("# my-merge\n"));
    assert!(
        card.contains(
            "merged using the [SLERP](https://en.wikipedia.org/wiki/Slerp) merge method.\n"
        ),
        "{card}"
    );
    assert!(card.contains("* base\n* ft_a\n"), "{card}");
    assert!(card.contains("| 0–5 | base layers 0–5; ft_a layers 0–5 |"), "{card}");
    assert!(
        card.contains("amalgam chat my-merge --temperature 0.7 --top-k 50 --top-p 0.95\n"),
        "the card tells how to talk to the merge with amalgam: {card}"
    );
}

#[test]
fn task_arithmetic_card_names_its_base() {
    let card = card_for(
        "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - {model: ft_a, parameters: {weight: 1.0}}\n",
    );
    assert!(card.contains("merge method using base as a base.\n"), "{card}");
    assert!(card.contains("* ft_a\n") && !card.contains("* base\n"), "{card}");
    assert!(!card.contains("### Layers"), "models: merges keep the layer layout");
}
