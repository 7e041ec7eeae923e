//! Per-tensor merge kernels. Each works elementwise on chunks of `f32` values that hold
//! inputs already rounded to the working dtype, and rounds where mergekit 0.1.5 rounds:
//! linear and slerp compute in `f32` and round once; task arithmetic rounds to the
//! working dtype after every operation, as PyTorch does for `bfloat16` tensors.

use amalgam_tensors::DType;
use amalgam_tensors::dtype::round_to;

use super::reduce;
use crate::error::{MergeError, Result};
use crate::tensor_plan::TensorPlan;

pub mod build;

pub use build::{Binding, Build};

/// A kernel with its parameters bound for one tensor. Input order is the plan's.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// `x` or `x * scale`.
    Passthrough { scale: Option<f32> },
    /// `sum_i w_i x_i`, accumulated with fused multiply-adds, then `/ divisor`.
    Linear { weights: Vec<f32>, divisor: Option<f32> },
    /// `base + lambda * sum_i w_i (x_i - base)`, rounded per operation.
    TaskArithmetic {
        base: usize,
        weights: Vec<(usize, f32)>,
        divisor: Option<f32>,
        lambda: Option<f32>,
    },
    /// Spherical interpolation from the base (`t = 0`) to the other input.
    Slerp { base: usize, t: f32 },
    /// NearSwap: interpolate toward the other input where the two are within `t`.
    NearSwap { base: usize, t: f32 },
    /// Reinforced Agent Merging: unique task-vector entries kept, overlapping ones
    /// averaged; with `plus`, unique entries scaled per model by shared/unique counts.
    Ram { base: usize, inputs: usize, epsilon: f32, plus: Option<RamPlus> },
    /// A method that needs the whole tensors in memory.
    Whole(super::whole::Whole),
}

/// ramplus_tl's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RamPlus {
    pub r: f32,
    pub alpha: f32,
}

/// Reads elements `start..start + out.len()` of input `input` into `out`, rounded to the
/// working dtype: `load(input, start, out)`.
pub type Loader<'a> = dyn FnMut(usize, usize, &mut [f32]) -> Result<()> + 'a;

/// Whole-tensor statistics a kernel needs before its elementwise pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Stats {
    /// The kernel needs none.
    #[default]
    None,
    /// slerp's interpolation coefficients of the base and the other input.
    Slerp { coef_a: f32, coef_b: f32 },
    /// ramplus_tl's per-model scale of unique contributions.
    Lambdas(Vec<f32>),
    /// The whole merged tensor, for whole-tensor methods read in pieces (GGUF output).
    Output(std::sync::Arc<Vec<f32>>),
}

/// Elements per statistics chunk: mergekit's slerp works through 2^20 elements at a time
/// and combines per-chunk norms and dots, so the grouping changes the float result.
pub const STATS_CHUNK: usize = 1 << 20;

impl Kernel {
    /// Binds the method's parameters for one tensor of `shape`. `working` is the dtype
    /// inputs are cast to; task arithmetic rounds its weights to it, as mergekit builds
    /// them as a tensor of that dtype.
    pub fn for_tensor(
        method: &str,
        plan: &TensorPlan,
        shape: &[usize],
        working: DType,
        seed: u64,
    ) -> Result<Kernel> {
        if plan.passthrough {
            return Ok(Kernel::Passthrough { scale: None });
        }
        let spec = super::method(method).ok_or_else(|| {
            MergeError::Unsupported(format!("merge method {method} has no kernel"))
        })?;
        (spec.kernel)(&Binding { plan, shape, working, seed })
    }

    /// Whether [`Kernel::stats`] must run before [`Kernel::apply`].
    pub fn needs_stats(&self) -> bool {
        matches!(self, Kernel::Slerp { .. } | Kernel::Ram { plus: Some(_), .. })
    }

    /// Whole-tensor statistics. `load(input, start, out)` fills `out` with elements
    /// `start..start + out.len()` of an input, rounded to the working dtype.
    pub fn stats(&self, working: DType, numel: usize, load: &mut Loader) -> Result<Stats> {
        if let Kernel::Ram { base, inputs, epsilon, plus: Some(plus) } = *self {
            let kernel = (base, inputs, epsilon, plus);
            return match working {
                DType::BF16 => ram_lambdas(kernel, |x| round_to(DType::BF16, x), numel, load),
                DType::F16 => ram_lambdas(kernel, |x| round_to(DType::F16, x), numel, load),
                DType::F32 | DType::F64 => ram_lambdas(kernel, |x| x, numel, load),
            };
        }
        let Kernel::Slerp { base, t } = *self else {
            return Ok(Stats::None);
        };
        let other = 1 - base;
        let chunk = STATS_CHUNK.min(numel.max(1));
        let (mut a, mut b) = (vec![0f32; chunk], vec![0f32; chunk]);
        let (mut norms_a, mut norms_b) = (Vec::new(), Vec::new());
        for start in (0..numel).step_by(chunk) {
            let n = chunk.min(numel - start);
            load(base, start, &mut a[..n])?;
            load(other, start, &mut b[..n])?;
            norms_a.push(reduce::norm2(&a[..n]));
            norms_b.push(reduce::norm2(&b[..n]));
        }
        let eps = 1e-8f32;
        // The per-chunk results are stacked as [chunks, 1, 1] and reduced again; torch
        // squeezes the unit axes, so the same contiguous kernels apply.
        let norm_a = Some(reduce::norm2(&norms_a)).filter(|n| *n > eps).unwrap_or(1.0);
        let norm_b = Some(reduce::norm2(&norms_b)).filter(|n| *n > eps).unwrap_or(1.0);
        let mut dots = Vec::new();
        let mut products = vec![0f32; chunk];
        for start in (0..numel).step_by(chunk) {
            let n = chunk.min(numel - start);
            load(base, start, &mut a[..n])?;
            load(other, start, &mut b[..n])?;
            for ((p, x), y) in products.iter_mut().zip(&a[..n]).zip(&b[..n]) {
                *p = (x / norm_a) * (y / norm_b);
            }
            dots.push(reduce::sum(&products[..n]));
        }
        let dot = reduce::sum(&dots).clamp(-1.0, 1.0);
        Ok(slerp_coefficients(dot, t))
    }

    /// Merges one chunk: `inputs[i]` holds the chunk of input `i`; results, rounded to
    /// `working`, go to `out`.
    pub fn apply(&self, working: DType, stats: &Stats, inputs: &[&[f32]], out: &mut [f32]) {
        // One monomorphized loop per dtype, so the rounding inlines into it.
        match working {
            DType::BF16 => self.apply_with(|x| round_to(DType::BF16, x), stats, inputs, out),
            DType::F16 => self.apply_with(|x| round_to(DType::F16, x), stats, inputs, out),
            DType::F32 | DType::F64 => self.apply_with(|x| x, stats, inputs, out),
        }
    }

    fn apply_with(
        &self,
        round: impl Fn(f32) -> f32 + Copy,
        stats: &Stats,
        inputs: &[&[f32]],
        out: &mut [f32],
    ) {
        match self {
            Kernel::Passthrough { scale: None } => out.copy_from_slice(inputs[0]),
            Kernel::Passthrough { scale: Some(s) } => {
                for (o, x) in out.iter_mut().zip(inputs[0]) {
                    *o = round(x * s);
                }
            }
            Kernel::Linear { weights, divisor } => linear(weights, *divisor, round, inputs, out),
            Kernel::TaskArithmetic { base, weights, divisor, lambda } => {
                task_arithmetic(*base, weights, *divisor, *lambda, round, inputs, out)
            }
            Kernel::Slerp { base, .. } => {
                let Stats::Slerp { coef_a, coef_b } = *stats else { return };
                let (a, b) = (inputs[*base], inputs[1 - base]);
                for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                    *o = round(coef_a * x + coef_b * y);
                }
            }
            Kernel::NearSwap { base, t } => {
                nearswap(inputs[*base], inputs[1 - base], *t, round, out)
            }
            Kernel::Whole(_) => {
                // Whole-tensor methods are computed by the executor, not per chunk.
                debug_assert!(false, "whole-tensor kernels have no chunk form");
            }
            Kernel::Ram { base, epsilon, .. } => {
                let lambdas = match stats {
                    Stats::Lambdas(l) => Some(l.as_slice()),
                    _ => None,
                };
                ram(*base, *epsilon, lambdas, inputs, round, out)
            }
        }
    }
}

/// mergekit's slerp coefficients from the clamped cosine, in `f32` as torch computes
/// them; nearly collinear inputs fall back to linear interpolation.
fn slerp_coefficients(dot: f32, t: f32) -> Stats {
    if dot.abs() > 0.9995 {
        return Stats::Slerp { coef_a: 1.0 - t, coef_b: t };
    }
    let theta = dot.acos();
    let sin_theta = theta.sin();
    Stats::Slerp {
        coef_a: ((1.0 - t) * theta).sin() / sin_theta,
        coef_b: (t * theta).sin() / sin_theta,
    }
}

/// `sum_i w_i x_i` with one fused multiply-add per input (torch's `addcmul_`), then the
/// optional division, rounded once.
fn linear(
    weights: &[f32],
    divisor: Option<f32>,
    round: impl Fn(f32) -> f32,
    inputs: &[&[f32]],
    out: &mut [f32],
) {
    out.fill(0.0);
    for (w, x) in weights.iter().zip(inputs) {
        reduce::fma_accumulate(out, x, *w);
    }
    match divisor {
        Some(d) => out.iter_mut().for_each(|o| *o = round(*o / d)),
        None => out.iter_mut().for_each(|o| *o = round(*o)),
    }
}

/// Task arithmetic with a rounding after each tensor operation, as mergekit's
/// generalized task arithmetic does in the working dtype.
fn task_arithmetic(
    base: usize,
    weights: &[(usize, f32)],
    divisor: Option<f32>,
    lambda: Option<f32>,
    round: impl Fn(f32) -> f32,
    inputs: &[&[f32]],
    out: &mut [f32],
) {
    let b = inputs[base];
    for (e, o) in out.iter_mut().enumerate() {
        // Deltas are stacked, scaled, then summed over models with an f32 accumulator.
        let mut mixed = 0f32;
        for &(i, w) in weights {
            let delta = round(inputs[i][e] - b[e]);
            mixed += round(delta * w);
        }
        let mut mixed = round(mixed);
        if let Some(d) = divisor {
            mixed = round(mixed / d);
        }
        if let Some(l) = lambda {
            mixed = round(mixed * l);
        }
        *o = round(b[e] + mixed);
    }
}

/// NearSwap in the working dtype, one rounding per torch operation:
/// `w = clamp(t / max(|a - b|, 1e-6), 0, 1)`, `w b + (1 - w) a`. torch evaluates
/// `t / x` as `reciprocal(x) * t`.
fn nearswap(a: &[f32], b: &[f32], t: f32, round: impl Fn(f32) -> f32, out: &mut [f32]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        let diff = round(round(x - y).abs().max(1e-6));
        let w = round(round(1.0 / diff) * t).clamp(0.0, 1.0);
        *o = round(round(w * y) + round(round(1.0 - w) * x));
    }
}

/// RAM: per element, task vectors above `epsilon` in magnitude count as contributions;
/// a lone contribution is kept (times its model's lambda, for ramplus_tl), overlapping
/// ones are averaged.
fn ram(
    base: usize,
    epsilon: f32,
    lambdas: Option<&[f32]>,
    inputs: &[&[f32]],
    round: impl Fn(f32) -> f32,
    out: &mut [f32],
) {
    let b = inputs[base];
    let others: Vec<&[f32]> = (0..inputs.len()).filter(|&i| i != base).map(|i| inputs[i]).collect();
    for (e, o) in out.iter_mut().enumerate() {
        let count = others.iter().filter(|x| round(x[e] - b[e]).abs() > epsilon).count();
        let mut merged = 0f32;
        for (m, x) in others.iter().enumerate() {
            let tv = round(x[e] - b[e]);
            if tv.abs() <= epsilon {
                continue;
            }
            merged += match (count, lambdas) {
                (1, Some(l)) => tv * l[m],
                (1, None) => tv,
                _ => round(tv / count as f32),
            };
        }
        // ramplus_tl's lambdas are a float32 tensor: its sum over models and the final
        // add are float32 (mergekit writes float32; amalgam honours the dtype).
        *o = if lambdas.is_some() { round(b[e] + merged) } else { round(b[e] + round(merged)) };
    }
}

/// ramplus_tl's per-model lambda: `1 + r * clamp(shared / max(unique, eps), 0, alpha)`,
/// where `shared` and `unique` count the model's contributions that overlap another
/// model's or stand alone, over the whole tensor.
fn ram_lambdas(
    kernel: (usize, usize, f32, RamPlus),
    round: impl Fn(f32) -> f32,
    numel: usize,
    load: &mut Loader,
) -> Result<Stats> {
    let (base, inputs, epsilon, plus) = kernel;
    let others: Vec<usize> = (0..inputs).filter(|&i| i != base).collect();
    let chunk = STATS_CHUNK.min(numel.max(1));
    let mut b = vec![0f32; chunk];
    let mut xs = vec![vec![0f32; chunk]; others.len()];
    let (mut shared, mut unique) = (vec![0u64; others.len()], vec![0u64; others.len()]);
    for start in (0..numel).step_by(chunk) {
        let len = chunk.min(numel - start);
        load(base, start, &mut b[..len])?;
        for (x, &i) in xs.iter_mut().zip(&others) {
            load(i, start, &mut x[..len])?;
        }
        for e in 0..len {
            let active = |x: &Vec<f32>| round(x[e] - b[e]).abs() > epsilon;
            let count = xs.iter().filter(|x| active(x)).count();
            for (m, x) in xs.iter().enumerate() {
                if active(x) {
                    if count > 1 {
                        shared[m] += 1;
                    } else {
                        unique[m] += 1;
                    }
                }
            }
        }
    }
    let lambdas = shared
        .iter()
        .zip(&unique)
        .map(|(&s, &u)| 1.0 + plus.r * (s as f32 / (u as f32).max(epsilon)).clamp(0.0, plus.alpha))
        .collect();
    Ok(Stats::Lambdas(lambdas))
}

#[cfg(test)]
mod tests;
