//! The planner on configs by hand: the seed recipe's layers, gradients, precedence, tied
//! models and errors.

use super::*;
use crate::config::Diagnostics;
use serde_json::json;
use std::collections::HashMap;

/// A catalog of Llama models with `layers` layers each and every tensor present.
struct Fake {
    configs: Vec<Map<String, Value>>,
    missing: HashMap<usize, Vec<String>>,
}

impl Fake {
    fn llama(layers: &[usize]) -> Fake {
        let configs = layers
            .iter()
            .map(|n| {
                json!({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": n})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect();
        Fake { configs, missing: HashMap::new() }
    }
}

impl Catalog for Fake {
    fn config(&self, model: usize) -> &Map<String, Value> {
        &self.configs[model]
    }
    fn contains(&self, model: usize, tensor: &str) -> bool {
        !self.missing.get(&model).is_some_and(|m| m.iter().any(|n| n == tensor))
    }
}

fn config(text: &str) -> MergeConfig {
    MergeConfig::parse(text, &mut Diagnostics::new(false)).unwrap()
}

fn seed_yaml() -> String {
    let mut text = String::from("slices:\n");
    for start in (0..=60).step_by(10) {
        text +=
            &format!("- sources:\n  - layer_range: [{start}, {}]\n    model: org/m\n", start + 20);
    }
    text + "merge_method: passthrough\ndtype: float16\n"
}

#[test]
fn seed_recipe_gives_140_layers_from_overlapping_slices() {
    let plan = plan(&config(&seed_yaml()), &Fake::llama(&[80]), false).unwrap();
    assert_eq!(plan.out_layers, Some(140));
    assert_eq!(plan.tensors.len(), 1 + 140 * 9 + 2);
    let find = |name: &str| plan.tensors.iter().find(|t| t.name == name).unwrap();
    // Output layer 20 is the first layer of the second slice: input layer 10.
    assert_eq!(
        find("model.layers.20.mlp.up_proj.weight").inputs[0].tensor,
        "model.layers.10.mlp.up_proj.weight"
    );
    assert_eq!(
        find("model.layers.139.input_layernorm.weight").inputs[0].tensor,
        "model.layers.79.input_layernorm.weight"
    );
    assert_eq!(find("lm_head.weight").inputs[0].tensor, "lm_head.weight");
}

#[test]
fn t_runs_over_each_slice_and_is_zero_off_layers() {
    let text = "merge_method: slerp\nbase_model: a\nslices:\n- sources:\n  - {model: a, layer_range: [0, 5]}\n  - {model: b, layer_range: [0, 5]}\n\
                parameters:\n  t: [0, 1]\n";
    let plan = plan(&config(text), &Fake::llama(&[6, 6]), false).unwrap();
    let t = |name: &str| {
        plan.tensors.iter().find(|x| x.name == name).unwrap().shared.get("t").unwrap().as_f64()
    };
    assert_eq!(t("model.embed_tokens.weight"), 0.0);
    assert_eq!(t("model.layers.0.self_attn.q_proj.weight"), 0.0);
    assert_eq!(t("model.layers.1.self_attn.q_proj.weight"), 0.25);
    assert_eq!(t("model.layers.4.self_attn.q_proj.weight"), 1.0);
    assert_eq!(t("lm_head.weight"), 0.0);
    let q =
        plan.tensors.iter().find(|x| x.name == "model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(q.base, Some(0));
}

#[test]
fn single_layer_slice_uses_t_one() {
    let text = "merge_method: slerp\nbase_model: a\nslices:\n- sources:\n  - {model: a, layer_range: [2, 3]}\n  - {model: b, layer_range: [2, 3]}\n\
                parameters:\n  t: [0.2, 0.8]\n";
    let plan = plan(&config(text), &Fake::llama(&[6, 6]), false).unwrap();
    let layer =
        plan.tensors.iter().find(|x| x.name == "model.layers.0.mlp.up_proj.weight").unwrap();
    assert!((layer.shared.get("t").unwrap().as_f64() - 0.8).abs() < 1e-12);
    assert_eq!(layer.inputs[1].tensor, "model.layers.2.mlp.up_proj.weight");
}

#[test]
fn precedence_source_then_slice_then_global() {
    let text = "merge_method: linear\nslices:\n- sources:\n  - {model: a, layer_range: [0, 2], parameters: {weight: 0.7}}\n  - {model: b, layer_range: [0, 2]}\n  parameters: {weight: 0.1}\n\
                parameters:\n  weight: 0.2\n  normalize: false\n";
    let plan = plan(&config(text), &Fake::llama(&[2, 2]), false).unwrap();
    let tensor = &plan.tensors[1];
    assert_eq!(tensor.inputs[0].params.get("weight").unwrap().as_f64(), 0.7);
    assert_eq!(tensor.inputs[1].params.get("weight").unwrap().as_f64(), 0.1);
    assert!(!tensor.shared.get("normalize").unwrap().as_bool());
}

#[test]
fn per_model_filters_match_the_input_name() {
    let text = "merge_method: passthrough\nslices:\n- sources:\n  - {model: a, layer_range: [3, 4], parameters: {scale: [{filter: layers.3., value: 0.5}]}}\n";
    let plan = plan(&config(text), &Fake::llama(&[6]), false).unwrap();
    let t = plan.tensors.iter().find(|x| x.name == "model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(t.inputs[0].params.get("scale").unwrap().as_f64(), 0.5);
    let embed = &plan.tensors[0];
    assert_eq!(embed.inputs[0].params.get("scale"), None);
}

#[test]
fn tied_model_has_no_lm_head_and_mixed_inputs_read_the_embedding() {
    let text = "merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n  - {model: b, parameters: {weight: 1}}\n";
    let mut fake = Fake::llama(&[2, 2]);
    fake.missing.insert(0, vec!["lm_head.weight".into()]);
    fake.missing.insert(1, vec!["lm_head.weight".into()]);
    let plan1 = plan(&config(text), &fake, false).unwrap();
    assert!(plan1.tensors.iter().all(|t| t.name != "lm_head.weight"));
    fake.missing.remove(&1);
    let plan2 = plan(&config(text), &fake, false).unwrap();
    let head = plan2.tensors.iter().find(|t| t.name == "lm_head.weight").unwrap();
    assert_eq!(head.inputs[0].tensor, "model.embed_tokens.weight");
    assert_eq!(head.inputs[1].tensor, "lm_head.weight");
}

#[test]
fn errors_name_what_is_wrong() {
    let fake = Fake::llama(&[80]);
    let past = seed_yaml().replace("[60, 80]", "[60, 90]");
    let err = plan(&config(&past), &fake, false).unwrap_err().to_string();
    assert!(err.contains("slices[6].sources[0].layer_range") && err.contains("80 layers"), "{err}");

    let missing_weight =
        "merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n  - {model: b}\n";
    let err = plan(&config(missing_weight), &Fake::llama(&[2, 2]), false).unwrap_err().to_string();
    assert!(err.contains("Missing required parameter weight for b."), "{err}");

    let no_base =
        "merge_method: task_arithmetic\nmodels:\n  - {model: a, parameters: {weight: 1}}\n";
    let err = plan(&config(no_base), &Fake::llama(&[2]), false).unwrap_err().to_string();
    assert!(err.contains("requires a base input"), "{err}");

    let mut fake = Fake::llama(&[2]);
    fake.missing.insert(0, vec!["model.layers.1.mlp.up_proj.weight".into()]);
    let whole = "merge_method: passthrough\nmodels: [{model: a}]\n";
    let err = plan(&config(whole), &fake, false).unwrap_err().to_string();
    assert!(
        err.contains("Tensor model.layers.1.mlp.up_proj.weight required but not present"),
        "{err}"
    );
}

#[test]
fn base_not_listed_is_added_as_an_input() {
    let text = "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - {model: a, parameters: {weight: 1}}\n";
    let plan = plan(&config(text), &Fake::llama(&[2, 2]), false).unwrap();
    assert_eq!(plan.tensors[0].inputs.len(), 2);
    assert_eq!(plan.tensors[0].base, Some(1));
    assert_eq!(plan.out_layers, None);
    assert!(plan.notes[0].contains("added as an input"));
}
