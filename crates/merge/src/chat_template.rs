//! The config's `chat_template`: `auto` (the template most input models share), a
//! built-in name, or a literal Jinja template; written into the output's tokenizer as
//! `chat_template.jinja` and the `chat_template` of `tokenizer_config.json`.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::error::{MergeError, Result};
use crate::source::Model;

/// The built-in templates, written from each format's published prompt layout.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "alpaca",
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}",
    ),
    (
        "chatml",
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    ),
    (
        "llama3",
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    ),
    (
        "mistral",
        "{{ bos_token }}{% set system = namespace(text='') %}{% for message in messages %}{% if message['role'] == 'system' %}{% set system.text = message['content'] + '\\n\\n' %}{% elif message['role'] == 'user' %}{{ '[INST] ' + system.text + message['content'] + ' [/INST]' }}{% set system.text = '' %}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}",
    ),
    (
        "exaone",
        "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}{{ '[|system|][|endofturn|]\\n' }}{% endif %}{{ '[|' + message['role'] + '|]' + message['content'] }}{% if message['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}",
    ),
];

/// Whether mergekit reads `value` as a template name rather than a template: shorter
/// than 256 characters, one line, no `{`.
fn is_name(value: &str) -> bool {
    value.len() < 256 && !value.contains('\n') && !value.contains('{')
}

/// Checks a config's `chat_template` value, as mergekit does when it parses it.
pub fn validate(value: &str) -> std::result::Result<(), String> {
    if value == "auto" || BUILT_IN.iter().any(|(n, _)| *n == value) {
        return Ok(());
    }
    if is_name(value) || value.len() < 20 || !value.contains('{') {
        let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        let hint = crate::config::nearest(value, &names)
            .map(|n| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        return Err(format!(
            "Invalid chat template {value:?}{hint}: use auto, a built-in name ({}), or a Jinja \
             template of at least 20 characters",
            names.join(", ")
        ));
    }
    Ok(())
}

/// The template `value` stands for; for `auto`, the one most input models share (the
/// first seen among equals), or `None` if none has one.
pub fn resolve(value: &str, models: &[Model]) -> Option<String> {
    if value != "auto" {
        let built_in = BUILT_IN.iter().find(|(n, _)| *n == value);
        return Some(built_in.map_or(value, |(_, t)| t).to_owned());
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for template in models.iter().filter_map(model_template) {
        match counts.iter_mut().find(|(t, _)| *t == template) {
            Some((_, n)) => *n += 1,
            None => counts.push((template, 1)),
        }
    }
    let most = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == most).map(|(t, _)| t)
}

/// A model's own chat template: `chat_template.jinja`, else `tokenizer_config.json`'s
/// `chat_template` (a string, or the `default` of a list of named templates).
fn model_template(model: &Model) -> Option<String> {
    if let Some(text) = model.file("chat_template.jinja").and_then(|p| fs::read_to_string(p).ok()) {
        return Some(text);
    }
    let text = fs::read_to_string(model.file("tokenizer_config.json")?).ok()?;
    let config: Value = serde_json::from_str(&text).ok()?;
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// Writes `template` into the tokenizer in `dir`: `chat_template.jinja`, and the
/// `chat_template` of `tokenizer_config.json` when there is one (older transformers
/// read only that).
pub fn apply(dir: &Path, template: &str) -> Result<()> {
    let jinja = dir.join("chat_template.jinja");
    fs::write(&jinja, template).map_err(|e| MergeError::io("write", &jinja, e))?;
    let config_path = dir.join("tokenizer_config.json");
    let Ok(text) = fs::read_to_string(&config_path) else { return Ok(()) };
    let mut config: Value = serde_json::from_str(&text).map_err(|e| {
        MergeError::Output(format!(
            "{} is not valid JSON ({e}); cannot set its chat_template",
            config_path.display()
        ))
    })?;
    if let Some(map) = config.as_object_mut() {
        map.insert("chat_template".into(), Value::String(template.to_owned()));
    }
    crate::output::write_json(&config_path, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_templates_and_mistakes() {
        assert!(validate("auto").is_ok() && validate("chatml").is_ok());
        assert!(validate("{% for m in messages %}{{ m['content'] }}{% endfor %}").is_ok());
        let err = validate("chatm").unwrap_err();
        assert!(err.contains("Invalid chat template \"chatm\" (did you mean `chatml`?)"), "{err}");
        assert!(validate("{{ x }}").unwrap_err().contains("at least 20 characters"));
        assert_eq!(resolve("llama3", &[]).unwrap(), BUILT_IN[2].1);
        assert_eq!(resolve("auto", &[]), None);
    }
}
