//! What the planner decides for one output tensor — its inputs, their resolved parameters
//! and the base — as plain data, read by the kernels (`methods`) and the executor.

use crate::params;

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
    /// Index into the plan's models.
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
