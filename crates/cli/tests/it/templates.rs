//! The config's `chat_template`: built-in names, `auto` by majority, literal templates,
//! mistakes refused, and the GGUF output's `tokenizer.chat_template`.

use std::fs;

use crate::common::*;

/// Copies base, ft_a and ft_b into a scratch folder, giving ft_a and ft_b the same
/// template (base keeps its own) so `auto` has a majority to find.
fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for model in ["base", "ft_a", "ft_b"] {
        copy_model(&data().join("methods/models").join(model), &tmp.path().join(model));
    }
    for model in ["ft_a", "ft_b"] {
        let path = tmp.path().join(model).join("tokenizer_config.json");
        let mut config = json(&path);
        config["chat_template"] = "{{ 'shared by two models' }}".into();
        fs::write(&path, config.to_string()).unwrap();
    }
    tmp
}

fn merge_with_template(dir: &std::path::Path, template: &str, out: &str) -> std::process::Output {
    let yaml = format!(
        "merge_method: linear\nmodels:\n  - {{model: base, parameters: {{weight: 1}}}}\n  - {{model: ft_a, parameters: {{weight: 1}}}}\n  - {{model: ft_b, parameters: {{weight: 1}}}}\nchat_template: {template:?}\n"
    );
    fs::write(dir.join("config.yml"), yaml).unwrap();
    run(amalgam().current_dir(dir).args(["merge", "config.yml", out, "--quiet"]))
}

#[test]
fn built_in_auto_and_literal_templates_are_written() {
    let tmp = scratch();
    let cases = [
        ("chatml", amalgam_merge::chat_template::BUILT_IN[1].1.to_owned()),
        ("auto", "{{ 'shared by two models' }}".to_owned()),
        (
            "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            "{% for m in messages %}{{ m['content'] }}{% endfor %}".to_owned(),
        ),
    ];
    for (i, (value, expected)) in cases.iter().enumerate() {
        let out = format!("out{i}");
        let output = merge_with_template(tmp.path(), value, &out);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let dir = tmp.path().join(&out);
        assert_eq!(
            &fs::read_to_string(dir.join("chat_template.jinja")).unwrap(),
            expected,
            "{value}"
        );
        assert_eq!(
            json(&dir.join("tokenizer_config.json"))["chat_template"],
            expected.as_str(),
            "{value}"
        );
    }
}

#[test]
fn unknown_template_names_are_refused() {
    let tmp = scratch();
    let output = merge_with_template(tmp.path(), "lama3", "out");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("chat_template: Invalid chat template \"lama3\" (did you mean `llama3`?)"),
        "{stderr}"
    );
    assert!(!tmp.path().join("out").exists());
}
