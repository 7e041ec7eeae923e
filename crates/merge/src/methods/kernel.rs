//! Per-tensor merge kernels. Each works elementwise on chunks of `f32` values that hold
//! inputs already rounded to the working dtype, and rounds where mergekit 0.1.5 rounds:
//! linear and slerp compute in `f32` and round once; task arithmetic rounds to the
//! working dtype after every operation, as PyTorch does for `bfloat16` tensors.

use amalgam_tensors::DType;
use amalgam_tensors::dtype::round_to;

use super::reduce;
use crate::error::{MergeError, Result};
use crate::plan::TensorPlan;

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
}

/// Reads elements `start..start + out.len()` of input `input` into `out`, rounded to the
/// working dtype: `load(input, start, out)`.
pub type Loader<'a> = dyn FnMut(usize, usize, &mut [f32]) -> Result<()> + 'a;

/// Whole-tensor statistics a kernel needs before its elementwise pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub coef_a: f32,
    pub coef_b: f32,
}

/// Elements per statistics chunk: mergekit's slerp works through 2^20 elements at a time
/// and combines per-chunk norms and dots, so the grouping changes the float result.
pub const STATS_CHUNK: usize = 1 << 20;

impl Kernel {
    /// Binds the method's parameters for one tensor. `working` is the dtype inputs are
    /// cast to; task arithmetic rounds its weights to it, as mergekit builds them as a
    /// tensor of that dtype.
    pub fn for_tensor(method: &str, plan: &TensorPlan, working: DType) -> Result<Kernel> {
        let input = |i: usize, name: &str| plan.inputs[i].params.get(name).map(|v| v.as_f64());
        if plan.passthrough {
            return Ok(Kernel::Passthrough { scale: None });
        }
        Ok(match method {
            "passthrough" => Kernel::Passthrough { scale: input(0, "scale").map(|s| s as f32) },
            "linear" => {
                let weights: Vec<f32> = (0..plan.inputs.len())
                    .map(|i| input(i, "weight").unwrap_or_default() as f32)
                    .collect();
                let normalize = plan.shared.get("normalize").is_some_and(|v| v.as_bool());
                let divisor = normalize.then(|| weights.iter().fold(0f32, |a, w| a + w));
                Kernel::Linear { weights, divisor }
            }
            "task_arithmetic" => {
                let base = plan.base.ok_or_else(|| missing_base(plan))?;
                let weights: Vec<(usize, f32)> = (0..plan.inputs.len())
                    .filter(|&i| i != base)
                    .map(|i| (i, round_to(working, input(i, "weight").unwrap_or_default() as f32)))
                    .collect();
                let normalize = plan.shared.get("normalize").is_some_and(|v| v.as_bool());
                let divisor = normalize.then(|| {
                    let sum = round_to(working, weights.iter().fold(0f32, |a, (_, w)| a + w));
                    if sum.abs() < 1e-8 { 1.0 } else { sum }
                });
                let lambda =
                    plan.shared.get("lambda").map(|v| v.as_f64() as f32).filter(|l| *l != 1.0);
                Kernel::TaskArithmetic { base, weights, divisor, lambda }
            }
            "slerp" => {
                let base = plan.base.ok_or_else(|| missing_base(plan))?;
                let t = plan.shared.get("t").map(|v| v.as_f64()).unwrap_or_default() as f32;
                Kernel::Slerp { base, t }
            }
            other => {
                return Err(MergeError::Unsupported(format!("merge method {other} has no kernel")));
            }
        })
    }

    /// Whether [`Kernel::stats`] must run before [`Kernel::apply`].
    pub fn needs_stats(&self) -> bool {
        matches!(self, Kernel::Slerp { .. })
    }

    /// Whole-tensor statistics. `load(input, start, out)` fills `out` with elements
    /// `start..start + out.len()` of an input, rounded to the working dtype.
    pub fn stats(&self, numel: usize, load: &mut Loader) -> Result<Stats> {
        let Kernel::Slerp { base, t } = *self else {
            return Ok(Stats { coef_a: 0.0, coef_b: 0.0 });
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
                let (a, b) = (inputs[*base], inputs[1 - base]);
                for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                    *o = round(stats.coef_a * x + stats.coef_b * y);
                }
            }
        }
    }
}

fn missing_base(plan: &TensorPlan) -> MergeError {
    MergeError::Tensor(format!("{}: the method needs a base input, and none is present", plan.name))
}

/// mergekit's slerp coefficients from the clamped cosine, in `f32` as torch computes
/// them; nearly collinear inputs fall back to linear interpolation.
fn slerp_coefficients(dot: f32, t: f32) -> Stats {
    if dot.abs() > 0.9995 {
        return Stats { coef_a: 1.0 - t, coef_b: t };
    }
    let theta = dot.acos();
    let sin_theta = theta.sin();
    Stats { coef_a: ((1.0 - t) * theta).sin() / sin_theta, coef_b: (t * theta).sin() / sin_theta }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_arithmetic_rounds_per_operation_in_bf16() {
        // base 1.0, ft 1.0078125 (one bf16 ulp up): delta = 2^-7, weight 0.3 rounds
        // to 0.30078125 in bf16; product rounds to bf16 before the add.
        let base = [1.0f32];
        let ft = [1.0078125f32];
        let w = round_to(DType::BF16, 0.3);
        let kernel =
            Kernel::TaskArithmetic { base: 0, weights: vec![(1, w)], divisor: None, lambda: None };
        let mut out = [0f32];
        kernel.apply(DType::BF16, &Stats { coef_a: 0.0, coef_b: 0.0 }, &[&base, &ft], &mut out);
        let expected = round_to(DType::BF16, 1.0 + round_to(DType::BF16, 0.0078125 * w));
        assert_eq!(out[0], expected);
    }

    #[test]
    fn linear_normalizes_by_the_weight_sum() {
        let kernel = Kernel::Linear { weights: vec![1.0, 3.0], divisor: Some(4.0) };
        let mut out = [0f32; 2];
        kernel.apply(
            DType::F32,
            &Stats { coef_a: 0.0, coef_b: 0.0 },
            &[&[1.0, 2.0], &[5.0, 6.0]],
            &mut out,
        );
        assert_eq!(out, [4.0, 5.0]);
    }

    #[test]
    fn slerp_endpoints_and_collinear_fallback() {
        let s = slerp_coefficients(0.5, 0.0);
        assert_eq!((s.coef_a, s.coef_b), (1.0, 0.0));
        let s = slerp_coefficients(1.0, 0.25);
        assert_eq!((s.coef_a, s.coef_b), (0.75, 0.25));
        // Orthogonal unit vectors at t = 0.5: both coefficients are sin(pi/4)/sin(pi/2).
        let s = slerp_coefficients(0.0, 0.5);
        assert!((s.coef_a - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(s.coef_a, s.coef_b);
    }
}
