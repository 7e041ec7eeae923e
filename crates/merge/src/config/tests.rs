//! The config parser against mergekit's schema: every key, its errors and warnings.

use super::*;

fn parse(text: &str) -> (Result<MergeConfig>, Vec<String>) {
    let mut d = Diagnostics::new(false);
    let r = MergeConfig::parse(text, &mut d);
    (r, d.warnings)
}

#[test]
fn seed_config_parses() {
    let text = "slices:\n- sources:\n  - layer_range: [0, 20]\n    model: meta-llama/Meta-Llama-3-70B-Instruct\n\
                - sources:\n  - layer_range: [10, 30]\n    model: meta-llama/Meta-Llama-3-70B-Instruct\n\
                merge_method: passthrough\ndtype: float16\n";
    let (config, warnings) = parse(text);
    let config = config.unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.slices.len(), 2);
    assert_eq!(config.slices[1].sources[0].layer_range, Some((10, 30)));
    assert_eq!(config.dtype, Some(DType::F16));
    assert_eq!(config.referenced_models().len(), 1);
}

#[test]
fn typos_are_warned_with_the_nearest_name() {
    let text = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {wieght: 1.0}\ndtyp: float16\n";
    let (config, warnings) = parse(text);
    assert!(config.is_ok());
    assert!(warnings.iter().any(|w| w.contains("`dtyp`") && w.contains("`dtype`")), "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("models[0].parameters.wieght") && w.contains("`weight`")),
        "{warnings:?}"
    );
}

#[test]
fn strict_turns_warnings_into_errors() {
    let mut d = Diagnostics::new(true);
    let err = MergeConfig::parse("merge_method: linear\nmodels: [{model: a}]\nnmae: x\n", &mut d)
        .unwrap_err();
    assert!(err.to_string().contains("nmae"), "{err}");
}

#[test]
fn structural_errors_name_their_location() {
    let cases = [
        ("merge_method: linear\n", "Exactly one of"),
        (
            "merge_method: frobnicate\nmodels: [{model: a}]\n",
            "Unimplemented merge method frobnicate",
        ),
        (
            "merge_method: passthrough\nslices:\n- sources:\n  - {model: a, layer_range: [0, 2]}\n  - {model: b, layer_range: [0, 3]}\n",
            "slices[0]",
        ),
        (
            "merge_method: passthrough\nslices:\n- sources:\n  - {model: a, layer_range: [3, 2]}\n",
            "slices[0].sources[0].layer_range",
        ),
        (
            "merge_method: linear\nmodels: [{model: a}]\ndtype: float8\n",
            "Unimplemented dtype \"float8\"",
        ),
        ("merge_method: linear\nmodels: [{model: a@b@c}]\n", "models[0].model"),
        (
            "merge_method: linear\nmodules: {text_decoder: {models: [{model: a}]}}\n",
            "not supported yet",
        ),
        ("merge_method: dare_tie\nmodels: [{model: a}]\n", "did you mean `dare_ties`?"),
        (
            "merge_method: linear\nmodels: [{model: a}]\ntokenizer_source: base\ntokenizer: {source: base}\n",
            "Cannot specify both",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(text).0.unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn settings_of_every_shape() {
    let text = "merge_method: slerp\nbase_model: a\nslices:\n- sources:\n  - {model: a, layer_range: [0, 2]}\n  - {model: b, layer_range: [0, 2]}\n\
                parameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5]\n    - value: 0.5\n";
    let config = parse(text).0.unwrap();
    let (name, setting) = &config.parameters[0];
    assert_eq!(name, "t");
    let Setting::Conditionals(c) = setting else { panic!("{setting:?}") };
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].filter.as_deref(), Some("self_attn"));
}

#[test]
fn configs_of_other_mergekit_tools() {
    let cases = [
        (
            "base_model: a\nexperts:\n  - source_model: b\n",
            "mergekit-moe config (it has `experts:`)",
        ),
        (
            "genome:\n  models: [a, b]\ntasks: [{name: x}]\n",
            "mergekit-evolve config (it has `genome:`)",
        ),
        (
            "name: one\nmerge_method: linear\nmodels: [{model: a}]\n---\nname: two\nmerge_method: linear\nmodels: [{model: one}]\n",
            "mergekit-multi config (it has several YAML documents",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(text).0.unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    // A leading document marker is one document, not mergekit-multi.
    assert_eq!(documents("---\nmerge_method: linear # x\n...\n"), 1);
}

#[test]
fn every_mergekit_method_is_implemented() {
    for name in MERGEKIT_METHODS {
        assert!(lookup_method(name).is_ok(), "{name}");
    }
}

#[test]
fn nearest_names() {
    assert_eq!(nearest("wieght", &["weight", "density"]), Some("weight"));
    assert_eq!(nearest("zzzzzz", &["weight", "density"]), None);
    assert_eq!(nearest("dtpye", &["dtype", "out_dtype"]), Some("dtype"));
    assert_eq!(nearest("tiess", &["ties", "slerp"]), Some("ties"));
    assert_eq!(nearest("lienar", &["linear", "slerp"]), Some("linear"), "a swap is one edit");
}
