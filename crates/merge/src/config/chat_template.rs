//! The `chat_template` values a config may hold, checked as mergekit checks them: `auto`,
//! a built-in name, or a literal Jinja template.

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
        let hint = crate::suggest::nearest(value, &names)
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
    }
}
