//! Each method's kernel builder, named by its entry in the method registry
//! ([`super::super::METHODS`]): it binds the method's parameters for one tensor.

use amalgam_tensors::DType;
use amalgam_tensors::dtype::round_to;

use super::super::gta::{Gta, Sparsifier, TaskInput, tensor_seed};
use super::super::whole::Whole;
use super::{Kernel, RamPlus};
use crate::error::{MergeError, Result};
use crate::tensor_plan::TensorPlan;

/// One tensor a kernel is bound for. `working` is the dtype inputs are cast to; task
/// arithmetic rounds its weights to it, as mergekit builds them as a tensor of that dtype.
pub struct Binding<'a> {
    pub plan: &'a TensorPlan,
    pub shape: &'a [usize],
    pub working: DType,
    /// `--random-seed`.
    pub seed: u64,
}

/// A method's kernel builder.
pub type Build = fn(&Binding) -> Result<Kernel>;

impl Binding<'_> {
    /// Input `i`'s parameter `name`, if set.
    fn input(&self, i: usize, name: &str) -> Option<f64> {
        self.plan.inputs[i].params.get(name).map(|v| v.as_f64())
    }

    /// A shared parameter as `f32` (validated and defaulted by the planner).
    fn shared(&self, name: &str) -> f32 {
        self.plan.shared.get(name).map(|v| v.as_f64()).unwrap_or_default() as f32
    }

    /// A shared flag, `default` when unset.
    fn flag(&self, name: &str, default: bool) -> bool {
        self.plan.shared.get(name).map_or(default, |v| v.as_bool())
    }

    /// The base input, which the method needs.
    fn base(&self) -> Result<usize> {
        self.plan.base.ok_or_else(|| {
            MergeError::Tensor(format!(
                "{}: the method needs a base input, and none is present",
                self.plan.name
            ))
        })
    }

    /// The inputs other than the base, if any.
    fn others(&self) -> Vec<usize> {
        (0..self.plan.inputs.len()).filter(|&i| Some(i) != self.plan.base).collect()
    }
}

pub fn passthrough(b: &Binding) -> Result<Kernel> {
    Ok(Kernel::Passthrough { scale: b.input(0, "scale").map(|s| s as f32) })
}

pub fn linear(b: &Binding) -> Result<Kernel> {
    let weights: Vec<f32> =
        (0..b.plan.inputs.len()).map(|i| b.input(i, "weight").unwrap_or_default() as f32).collect();
    let divisor = b.flag("normalize", false).then(|| weights.iter().fold(0f32, |a, w| a + w));
    Ok(Kernel::Linear { weights, divisor })
}

pub fn task_arithmetic(b: &Binding) -> Result<Kernel> {
    let base = b.base()?;
    let weights: Vec<(usize, f32)> = (0..b.plan.inputs.len())
        .filter(|&i| i != base)
        .map(|i| (i, round_to(b.working, b.input(i, "weight").unwrap_or_default() as f32)))
        .collect();
    let divisor = b.flag("normalize", false).then(|| {
        let sum = round_to(b.working, weights.iter().fold(0f32, |a, (_, w)| a + w));
        if sum.abs() < 1e-8 { 1.0 } else { sum }
    });
    let lambda = b.plan.shared.get("lambda").map(|v| v.as_f64() as f32).filter(|l| *l != 1.0);
    Ok(Kernel::TaskArithmetic { base, weights, divisor, lambda })
}

pub fn slerp(b: &Binding) -> Result<Kernel> {
    Ok(Kernel::Slerp { base: b.base()?, t: b.shared("t") })
}

pub fn nearswap(b: &Binding) -> Result<Kernel> {
    Ok(Kernel::NearSwap { base: b.base()?, t: b.shared("t") })
}

pub fn model_stock(b: &Binding) -> Result<Kernel> {
    let (base, filter_wise) = (b.base()?, b.flag("filter_wise", false));
    Ok(Kernel::Whole(Whole::ModelStock { base, filter_wise }))
}

pub fn ties(b: &Binding) -> Result<Kernel> {
    gta(b, Sparsifier::Magnitude, true)
}

pub fn dare_ties(b: &Binding) -> Result<Kernel> {
    gta(b, Sparsifier::Random, true)
}

pub fn dare_linear(b: &Binding) -> Result<Kernel> {
    gta(b, Sparsifier::Random, false)
}

pub fn breadcrumbs(b: &Binding) -> Result<Kernel> {
    gta(b, Sparsifier::MagnitudeOutliers, false)
}

pub fn breadcrumbs_ties(b: &Binding) -> Result<Kernel> {
    gta(b, Sparsifier::MagnitudeOutliers, true)
}

pub fn della(b: &Binding) -> Result<Kernel> {
    gta(b, Sparsifier::DellaMagprune, true)
}

pub fn della_linear(b: &Binding) -> Result<Kernel> {
    gta(b, Sparsifier::DellaMagprune, false)
}

/// Generalized task arithmetic with this sparsifier, and sign consensus or not.
fn gta(b: &Binding, sparsifier: Sparsifier, consensus: bool) -> Result<Kernel> {
    let (base, plan) = (b.base()?, b.plan);
    let mut tasks = Vec::new();
    for i in (0..plan.inputs.len()).filter(|&i| i != base) {
        let param = |name: &str| b.input(i, name).map(|v| v as f32);
        let task = TaskInput {
            index: i,
            weight: param("weight").unwrap_or_default(),
            density: param("density").unwrap_or(1.0),
            gamma: param("gamma").unwrap_or(0.01),
            epsilon: param("epsilon").unwrap_or(0.15),
        };
        if sparsifier == Sparsifier::DellaMagprune
            && task.density < 1.0
            && task.density > 0.0
            && (task.density + task.epsilon >= 1.0 || task.density - task.epsilon <= 0.0)
        {
            return Err(MergeError::Tensor(format!(
                "{}: epsilon {} must keep density {} +/- epsilon inside (0, 1); lower epsilon",
                plan.name, task.epsilon, task.density
            )));
        }
        tasks.push(task);
    }
    Ok(Kernel::Whole(Whole::Gta(Gta {
        base,
        tasks,
        sparsifier: Some(sparsifier),
        consensus,
        normalize: b.flag("normalize", false),
        rescale: b.flag("rescale", false),
        lambda: b.shared("lambda"),
        seed: tensor_seed(b.seed, &plan.name),
    })))
}

pub fn sce(b: &Binding) -> Result<Kernel> {
    Ok(Kernel::Whole(Whole::Sce { base: b.base()?, select_topk: b.shared("select_topk") }))
}

pub fn arcee_fusion(b: &Binding) -> Result<Kernel> {
    let base = b.base()?;
    let other = 1 - base.min(1);
    let seed = tensor_seed(b.seed, &b.plan.name);
    Ok(Kernel::Whole(Whole::ArceeFusion { base, other, seed }))
}

pub fn multislerp(b: &Binding) -> Result<Kernel> {
    let others = b.others();
    let weights = others.iter().map(|&i| b.input(i, "weight").unwrap_or_default() as f32);
    Ok(Kernel::Whole(Whole::MultiSlerp {
        base: b.plan.base,
        weights: weights.collect(),
        others,
        normalize: b.flag("normalize_weights", true),
        eps: b.shared("eps"),
    }))
}

pub fn nuslerp(b: &Binding) -> Result<Kernel> {
    let others = b.others();
    let [first, second] = others[..] else {
        return Err(MergeError::Tensor(format!(
            "{}: nuslerp needs exactly two inputs besides the base, not {}",
            b.plan.name,
            others.len()
        )));
    };
    let w: Vec<f64> = others.iter().map(|&i| b.input(i, "weight").unwrap_or_default()).collect();
    let total: f64 = w.iter().sum();
    let t = if total.abs() < 1e-6 { 0.5 } else { w[1] / total };
    Ok(Kernel::Whole(Whole::NuSlerp {
        base: b.plan.base,
        first,
        second,
        t,
        // Vectors along rows or columns need a matrix; anything else is one vector (as
        // mergekit's transpose leaves a 1-D tensor whole).
        flatten: b.flag("nuslerp_flatten", true) || b.shape.len() < 2,
        row_wise: b.flag("nuslerp_row_wise", false),
    }))
}

pub fn karcher(b: &Binding) -> Result<Kernel> {
    let max_iter = b.plan.shared.get("max_iter").map_or(10, |v| v.as_f64() as usize);
    Ok(Kernel::Whole(Whole::Karcher { max_iter, tol: b.shared("tol") }))
}

pub fn ram(b: &Binding) -> Result<Kernel> {
    ram_with(b, None)
}

pub fn ramplus_tl(b: &Binding) -> Result<Kernel> {
    ram_with(b, Some(RamPlus { r: b.shared("r"), alpha: b.shared("alpha") }))
}

fn ram_with(b: &Binding, plus: Option<RamPlus>) -> Result<Kernel> {
    let (base, inputs, epsilon) = (b.base()?, b.plan.inputs.len(), b.shared("epsilon"));
    Ok(Kernel::Ram { base, inputs, epsilon, plus })
}
