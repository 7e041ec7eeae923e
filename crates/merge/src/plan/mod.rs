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
pub use crate::tensor_plan::{InputPlan, Resolved, TensorPlan};

/// What the planner needs to know about the input models, by index into
/// [`MergeConfig::referenced_models`].
pub trait Catalog {
    /// The model's parsed `config.json`.
    fn config(&self, model: usize) -> &Map<String, Value>;
    /// Whether the model has a tensor of this name.
    fn contains(&self, model: usize, tensor: &str) -> bool;
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
            self.plan_unlayered(w, first, first.sources.len())?;
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
            self.plan_unlayered(w, last, keep)?;
        }
        Ok(())
    }

    /// Plans a weight outside the layers (embeddings, final norm, head) from the first
    /// `keep` sources of `slice`, under its own name.
    fn plan_unlayered(&mut self, w: &WeightDef, slice: &'a OutputSlice, keep: usize) -> Result<()> {
        let models: Vec<&ModelRef> = slice.sources[..keep].iter().map(|s| &s.model).collect();
        let names = vec![w.name.to_owned(); models.len()];
        let origin = Origin { slice, names, models, t: 0.0 };
        self.plan_tensor(w, w.name.to_owned(), origin)
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
mod tests;
