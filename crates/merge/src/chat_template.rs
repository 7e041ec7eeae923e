//! The output's chat template from the config's `chat_template` (checked by `config`):
//! for `auto`, the template most input models share; written into the output's tokenizer
//! as `chat_template.jinja` and the `chat_template` of `tokenizer_config.json`.

use std::fs;
use std::path::Path;

use serde_json::Value;

pub use crate::config::chat_template::BUILT_IN;
use crate::error::{MergeError, Result};
use crate::source::Model;

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
    fn names_resolve_to_their_templates() {
        assert_eq!(resolve("llama3", &[]).unwrap(), BUILT_IN[2].1);
        assert_eq!(resolve("auto", &[]), None);
    }
}
