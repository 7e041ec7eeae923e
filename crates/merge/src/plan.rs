//! The planner: turns a config and the input models' configs and tensor names into plain
//! data — for each output tensor, its inputs, method and resolved parameters — without
//! touching any weights.

use serde_json::{Map, Value};

use crate::arch::{Architecture, WeightDef};
use crate::config::{InputSlice, MergeConfig, OutputSlice, Params};
use crate::error::{MergeError, Result};
use crate::methods::{BasePolicy, Default, MethodSpec, OptionalPolicy, Scope};
use crate::model_ref::ModelRef;
use crate::params;

/// What the planner needs to know about the input models, by index into
/// [`MergeConfig::referenced_models`].
pub trait Catalog {
    /// The model's parsed `config.json`.
    fn config(&self, model: usize) -> &Map<String, Value>;
    /// Whether the model has a tensor of this name.
    fn contains(&self, model: usize, tensor: &str) -> bool;
}

/// Resolved parameter values; `None` means unset (passthrough's `scale`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved(pub Vec<(&'static str, Option<params::Value>)>);

impl Resolved {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&params::Value> {
        self.0.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_ref())
    }
}

/// One input of an output tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct InputPlan {
    /// Index into [`Plan::models`].
    pub model: usize,
    /// The tensor name to read (a tied name if the model lacks the planned one).
    pub tensor: String,
    /// Per-input parameters (only those the method asks of this input).
    pub params: Resolved,
}

/// One output tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    pub name: String,
    pub inputs: Vec<InputPlan>,
    /// Index into `inputs` of the base model, for methods that use one.
    pub base: Option<usize>,
    /// Whether this is a lone input passed through (an optional weight present in only
    /// one model), whatever the method.
    pub passthrough: bool,
    pub shared: Resolved,
    /// Depth in `[0, 1]` used for gradients (0 for non-layer weights).
    pub t: f64,
    /// The axis indexed by token id, for embeddings and the output head.
    pub vocab_axis: Option<usize>,
}

/// The whole merge, as data.
#[derive(Debug)]
pub struct Plan {
    pub models: Vec<ModelRef>,
    pub arch: &'static Architecture,
    pub method: &'static MethodSpec,
    pub tensors: Vec<TensorPlan>,
    /// The output layer count, when slices change it.
    pub out_layers: Option<usize>,
    /// For each output layer, the layer of the first source it comes from (set with
    /// `out_layers`), to carry per-layer config settings over.
    pub layer_origins: Option<Vec<usize>>,
    /// The model whose `config.json` (and tokenizer) the output takes.
    pub donor: usize,
    /// Notes for the user about surprising-but-mergekit-compatible behaviour.
    pub notes: Vec<String>,
}

/// Plans a merge. `allow_crimes` permits inputs of different architectures.
pub fn plan(config: &MergeConfig, catalog: &dyn Catalog, allow_crimes: bool) -> Result<Plan> {
    let models = config.referenced_models();
    let donor = 0; // The base model when set (it comes first), else the first model named.
    let arch = architecture(&models, catalog, donor, allow_crimes)?;
    let mut notes = Vec::new();
    let slices = concrete_slices(config, &models, catalog, arch, &mut notes)?;
    let mut planner = Planner { config, catalog, arch, models: &models, tensors: Vec::new() };
    for (i, slice) in slices.iter().enumerate() {
        planner.check_contract(slice, &format!("slices[{i}]"))?;
    }
    planner.plan_all(&slices, &mut notes)?;
    let layer_origins: Option<Vec<usize>> = (!config.from_models).then(|| {
        slices
            .iter()
            .flat_map(|s| {
                let (start, end) = s.sources[0].range();
                start..end
            })
            .collect()
    });
    Ok(Plan {
        tensors: planner.tensors,
        models,
        arch,
        method: config.merge_method,
        out_layers: layer_origins.as_ref().map(Vec::len),
        layer_origins,
        donor,
        notes,
    })
}

impl InputSlice {
    /// The layer range; set for every source once slices are concrete.
    fn range(&self) -> (usize, usize) {
        self.layer_range.unwrap_or((0, 0))
    }
}

/// The architecture of the merge: the donor's, checked against every input.
fn architecture(
    models: &[ModelRef],
    catalog: &dyn Catalog,
    donor: usize,
    allow_crimes: bool,
) -> Result<&'static Architecture> {
    let mut found = Vec::with_capacity(models.len());
    for (i, model) in models.iter().enumerate() {
        let config = catalog.config(i);
        let arch = Architecture::for_config(config).ok_or_else(|| MergeError::Model {
            model: model.to_string(),
            message: format!(
                "its architecture {} is not supported yet; amalgam knows {}",
                config
                    .get("architectures")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(none given)".into()),
                Architecture::known_classes().join(", ")
            ),
        })?;
        found.push(arch);
    }
    let arch = found[donor];
    if let Some(i) = found.iter().position(|a| a.model_type != arch.model_type)
        && !allow_crimes
    {
        return Err(MergeError::Model {
            model: models[i].to_string(),
            message: format!(
                "its architecture ({}) differs from {}'s ({}); merging different \
                 architectures rarely gives a working model. Pass --allow-crimes to try anyway",
                found[i].model_type, models[donor], arch.model_type
            ),
        });
    }
    Ok(arch)
}

/// Slices with every layer range filled in and checked; `models:` gains the base model as
/// an extra source when it is not listed (as in mergekit).
fn concrete_slices(
    config: &MergeConfig,
    models: &[ModelRef],
    catalog: &dyn Catalog,
    arch: &Architecture,
    notes: &mut Vec<String>,
) -> Result<Vec<OutputSlice>> {
    let layers = |model: &ModelRef| -> Result<usize> {
        let id = index_of(models, model);
        arch.num_layers(catalog.config(id)).ok_or_else(|| MergeError::Model {
            model: model.to_string(),
            message: format!("its config.json has no integer `{}`", arch.num_layers_key),
        })
    };
    let mut slices = config.slices.clone();
    if config.from_models {
        let slice = &mut slices[0];
        if let Some(base) = &config.base_model
            && !slice.sources.iter().any(|s| &s.model == base)
        {
            notes.push(format!(
                "base_model {base} is not listed under models:, so it is added as an input \
                 with no parameters (as mergekit does)"
            ));
            slice.sources.push(InputSlice {
                model: base.clone(),
                layer_range: None,
                parameters: Vec::new(),
            });
        }
        for source in &mut slice.sources {
            source.layer_range = Some((0, layers(&source.model)?));
        }
    }
    for (i, slice) in slices.iter().enumerate() {
        for (j, source) in slice.sources.iter().enumerate() {
            let (start, end) = source.range();
            let n = layers(&source.model)?;
            if end > n {
                return Err(MergeError::config(
                    format!("slices[{i}].sources[{j}].layer_range"),
                    format!(
                        "[{start}, {end}] goes past the {n} layers of {}; ranges are half-open \
                         and the largest valid end is {n}",
                        source.model
                    ),
                ));
            }
        }
    }
    Ok(slices)
}

fn index_of(models: &[ModelRef], model: &ModelRef) -> usize {
    models.iter().position(|m| m == model).unwrap_or(0)
}

struct Planner<'a> {
    config: &'a MergeConfig,
    catalog: &'a dyn Catalog,
    arch: &'static Architecture,
    models: &'a [ModelRef],
    tensors: Vec<TensorPlan>,
}

/// Where a tensor's inputs and parameters come from.
struct Origin<'a> {
    slice: &'a OutputSlice,
    /// The models feeding the tensor, in order.
    models: Vec<&'a ModelRef>,
    /// Input tensor name for each model.
    names: Vec<String>,
    t: f64,
}

impl<'a> Planner<'a> {
    fn method(&self) -> &'static MethodSpec {
        self.config.merge_method
    }

    fn base_of(&self, slice: &'a OutputSlice) -> Option<&'a ModelRef> {
        slice.base_model.as_ref().or(self.config.base_model.as_ref())
    }

    /// Checks a slice's inputs against the method's contract before any tensor is planned.
    fn check_contract(&self, slice: &OutputSlice, location: &str) -> Result<()> {
        let method = self.method();
        let models: Vec<&ModelRef> = slice.sources.iter().map(|s| &s.model).collect();
        for (i, m) in models.iter().enumerate() {
            if models[..i].contains(m) {
                return Err(MergeError::config(
                    location,
                    format!(
                        "Duplicate merge inputs: {m} is a source twice; each model may appear once per slice"
                    ),
                ));
            }
        }
        let base = self.base_of(slice).filter(|_| method.base != BasePolicy::Ignored);
        self.check_inputs(&models, base, location)
    }

    fn check_inputs(
        &self,
        models: &[&ModelRef],
        base: Option<&ModelRef>,
        location: &str,
    ) -> Result<()> {
        let method = self.method();
        let has_base = base.is_some_and(|b| models.contains(&b));
        if let Some(b) = base.filter(|_| !has_base) {
            return Err(MergeError::config(
                location,
                format!(
                    "Base input is not present in merge inputs: base_model {b} must also be one of the sources"
                ),
            ));
        }
        if method.base == BasePolicy::Required && !has_base {
            return Err(MergeError::config(
                location,
                format!("Merge method {} requires a base input: set base_model", method.name),
            ));
        }
        let n = models.len();
        if let Some(expected) = outside(n, method.min_inputs, method.max_inputs) {
            return Err(MergeError::config(
                location,
                format!("Merge method {} requires {expected} inputs; got {n}", method.name),
            ));
        }
        let others = n - usize::from(has_base);
        if let Some(expected) = outside(others, method.min_non_base, method.max_non_base) {
            return Err(MergeError::config(
                location,
                format!(
                    "Merge method {} needs {expected} non-base model(s) under `models:`; got {others}",
                    method.name
                ),
            ));
        }
        Ok(())
    }

    fn plan_all(&mut self, slices: &'a [OutputSlice], notes: &mut Vec<String>) -> Result<()> {
        let first = &slices[0];
        let last = &slices[slices.len() - 1];
        for w in self.arch.pre_weights {
            let models: Vec<&ModelRef> = first.sources.iter().map(|s| &s.model).collect();
            self.plan_tensor(
                w,
                w.name.to_owned(),
                Origin {
                    slice: first,
                    names: vec![w.name.to_owned(); models.len()],
                    models,
                    t: 0.0,
                },
            )?;
        }
        let mut out_layer = 0;
        for slice in slices {
            let (start, end) = slice.sources[0].range();
            let count = end - start;
            for k in 0..count {
                let t = if count > 1 { k as f64 / (count - 1) as f64 } else { 1.0 };
                for w in self.arch.layer_weights {
                    let origin = Origin {
                        slice,
                        models: slice.sources.iter().map(|s| &s.model).collect(),
                        names: slice.sources.iter().map(|s| w.name_at(s.range().0 + k)).collect(),
                        t,
                    };
                    self.plan_tensor(w, w.name_at(out_layer), origin)?;
                }
                out_layer += 1;
            }
        }
        // mergekit pairs the last slice's models with as many names as the first slice
        // has sources, so extra sources of the last slice drop out of post-layer weights.
        let keep = first.sources.len().min(last.sources.len());
        if last.sources.len() > keep {
            notes.push(format!(
                "the last slice has {} sources but the first has {keep}; as in mergekit, only \
                 the last slice's first {keep} feed the final norm and lm_head",
                last.sources.len()
            ));
        }
        for w in self.arch.post_weights {
            let models: Vec<&ModelRef> = last.sources[..keep].iter().map(|s| &s.model).collect();
            self.plan_tensor(
                w,
                w.name.to_owned(),
                Origin {
                    slice: last,
                    names: vec![w.name.to_owned(); models.len()],
                    models,
                    t: 0.0,
                },
            )?;
        }
        Ok(())
    }

    /// Plans one output tensor, or skips an optional one no input has.
    fn plan_tensor(
        &mut self,
        weight: &WeightDef,
        out_name: String,
        origin: Origin<'a>,
    ) -> Result<()> {
        let ids: Vec<usize> = origin.models.iter().map(|m| index_of(self.models, m)).collect();
        if weight.optional
            && !ids.iter().zip(&origin.names).any(|(&id, n)| self.catalog.contains(id, n))
        {
            return Ok(()); // "Skipping optional weight": no input has it under its own name.
        }
        let base_ref =
            self.base_of(origin.slice).filter(|_| self.method().base != BasePolicy::Ignored);
        let mut inputs = Vec::with_capacity(ids.len());
        let mut present: Vec<&ModelRef> = Vec::with_capacity(ids.len());
        for ((&id, name), model) in ids.iter().zip(&origin.names).zip(&origin.models) {
            let Some(found) = self.find_tensor(id, name, weight) else {
                if weight.optional {
                    continue;
                }
                return Err(MergeError::Model {
                    model: model.to_string(),
                    message: format!(
                        "Tensor {name} required but not present in model {model}; the model is \
                         incomplete or of another layout than its config.json says"
                    ),
                });
            };
            let is_base = Some(*model) == base_ref;
            let params = self.input_params(&origin, model, name, is_base)?;
            inputs.push(InputPlan { model: id, tensor: found, params });
            present.push(model);
        }
        let passthrough = present.len() == 1
            && present.len() < origin.models.len()
            && match self.method().optional_policy {
                OptionalPolicy::PassthroughSingleton => true,
                OptionalPolicy::PassthroughBaseSingleton => Some(present[0]) == base_ref,
                OptionalPolicy::Error => false,
            };
        if !passthrough {
            self.check_inputs(&present, base_ref, &out_name)?;
        }
        let shared = self.shared_params(&origin, &out_name)?;
        let base = base_ref.and_then(|b| present.iter().position(|m| *m == b));
        self.tensors.push(TensorPlan {
            name: out_name,
            inputs,
            base,
            passthrough,
            shared,
            t: origin.t,
            vocab_axis: weight.vocab_axis,
        });
        Ok(())
    }

    /// The name to read for `name` in model `id`: itself, else a tied name.
    fn find_tensor(&self, id: usize, name: &str, weight: &WeightDef) -> Option<String> {
        std::iter::once(name)
            .chain(weight.tied_names.iter().copied())
            .find(|n| self.catalog.contains(id, n))
            .map(str::to_owned)
    }

    fn shared_params(&self, origin: &Origin, tensor: &str) -> Result<Resolved> {
        let scopes = [&origin.slice.parameters, &self.config.parameters];
        let mut values = Vec::new();
        for spec in self.method().params.iter().filter(|p| p.scope == Scope::Shared) {
            let value = resolve(spec.name, spec.kind, &scopes, tensor, origin.t)?;
            values.push((spec.name, self.or_default(spec.name, &spec.default, value, tensor)?));
        }
        Ok(Resolved(values))
    }

    fn input_params(
        &self,
        origin: &Origin,
        model: &ModelRef,
        tensor: &str,
        is_base: bool,
    ) -> Result<Resolved> {
        let mut scopes: Vec<&Params> = origin
            .slice
            .sources
            .iter()
            .filter(|s| &s.model == model)
            .map(|s| &s.parameters)
            .collect();
        scopes.push(&origin.slice.parameters);
        scopes.push(&self.config.parameters);
        let mut values = Vec::new();
        for spec in self.method().params.iter().filter(|p| p.scope != Scope::Shared) {
            if is_base && spec.scope == Scope::NonBase {
                continue;
            }
            let value = resolve(spec.name, spec.kind, &scopes, tensor, origin.t)?;
            let location = format!("{model}.{tensor}");
            values.push((spec.name, self.or_default(spec.name, &spec.default, value, &location)?));
        }
        Ok(Resolved(values))
    }

    fn or_default(
        &self,
        name: &str,
        default: &Default,
        value: Option<params::Value>,
        location: &str,
    ) -> Result<Option<params::Value>> {
        match (value, default) {
            (Some(v), _) => Ok(Some(v)),
            (None, Default::Value(v)) => Ok(Some(v.clone())),
            (None, Default::Unset) => Ok(None),
            (None, Default::Required) => Err(MergeError::config(
                "parameters",
                format!(
                    "Missing required parameter {name} for {location}; {} needs it: set \
                     `{name}` under that model's parameters, the slice's, or the top-level \
                     parameters",
                    self.method().name
                ),
            )),
        }
    }
}

/// The first value any scope gives `name` for `tensor` at depth `t`.
fn resolve(
    name: &str,
    kind: params::Kind,
    scopes: &[&Params],
    tensor: &str,
    t: f64,
) -> Result<Option<params::Value>> {
    for scope in scopes {
        for (key, setting) in scope.iter() {
            if key != name {
                continue;
            }
            let value = setting.evaluate(tensor, t, kind).map_err(|m| {
                MergeError::config(format!("parameters.{name}"), format!("{m} (for {tensor})"))
            })?;
            if value.is_some() {
                return Ok(value);
            }
        }
    }
    Ok(None)
}

/// For a count outside `min..=max` (unbounded above without `max`), the allowed range in
/// words ("exactly 2", "1 to 3", "at least 3"); `None` when the count is allowed.
fn outside(n: usize, min: usize, max: Option<usize>) -> Option<String> {
    if n >= min && max.is_none_or(|max| n <= max) {
        return None;
    }
    Some(match max {
        Some(max) if max == min => format!("exactly {max}"),
        Some(max) => format!("{min} to {max}"),
        None => format!("at least {min}"),
    })
}
#[cfg(test)]
mod tests {
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
            text += &format!(
                "- sources:\n  - layer_range: [{start}, {}]\n    model: org/m\n",
                start + 20
            );
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
        let q = plan
            .tensors
            .iter()
            .find(|x| x.name == "model.layers.0.self_attn.q_proj.weight")
            .unwrap();
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
        let t =
            plan.tensors.iter().find(|x| x.name == "model.layers.0.mlp.down_proj.weight").unwrap();
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
        assert!(
            err.contains("slices[6].sources[0].layer_range") && err.contains("80 layers"),
            "{err}"
        );

        let missing_weight = "merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n  - {model: b}\n";
        let err =
            plan(&config(missing_weight), &Fake::llama(&[2, 2]), false).unwrap_err().to_string();
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
}
