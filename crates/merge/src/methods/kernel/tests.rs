//! Per-chunk kernels by hand: each method's arithmetic and rounding on small inputs.

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
    kernel.apply(DType::BF16, &Stats::None, &[&base, &ft], &mut out);
    let expected = round_to(DType::BF16, 1.0 + round_to(DType::BF16, 0.0078125 * w));
    assert_eq!(out[0], expected);
}

#[test]
fn linear_normalizes_by_the_weight_sum() {
    let kernel = Kernel::Linear { weights: vec![1.0, 3.0], divisor: Some(4.0) };
    let mut out = [0f32; 2];
    kernel.apply(DType::F32, &Stats::None, &[&[1.0, 2.0], &[5.0, 6.0]], &mut out);
    assert_eq!(out, [4.0, 5.0]);
}

/// Runs `kernel` on in-memory inputs, computing its statistics first if it has any.
fn run(kernel: &Kernel, inputs: &[&[f32]]) -> Vec<f32> {
    let n = inputs[0].len();
    let mut load = |i: usize, start: usize, out: &mut [f32]| {
        out.copy_from_slice(&inputs[i][start..start + out.len()]);
        Ok(())
    };
    let stats = if kernel.needs_stats() {
        kernel.stats(DType::F32, n, &mut load).unwrap()
    } else {
        Stats::None
    };
    let mut out = vec![0f32; n];
    kernel.apply(DType::F32, &stats, inputs, &mut out);
    out
}

#[test]
fn linear_with_a_zero_weight_sum_is_not_finite() {
    // mergekit has no guard: normalising by a zero sum gives inf or NaN.
    let kernel = Kernel::Linear { weights: vec![1.0, -1.0], divisor: Some(0.0) };
    let out = run(&kernel, &[&[1.0, 2.0], &[3.0, 2.0]]);
    assert!(out[0].is_infinite() && out[1].is_nan(), "{out:?}");
}

#[test]
fn nearswap_by_hand() {
    // w = clamp(0.1 / |a - b|, 0, 1): 1 (within t), 0.1, 0.05.
    let kernel = Kernel::NearSwap { base: 0, t: 0.1 };
    let out = run(&kernel, &[&[0.0, 0.0, 0.0], &[0.05, 1.0, -2.0]]);
    assert_eq!(out, [0.05, 0.1, -0.1]);
}

#[test]
fn ram_and_ramplus_by_hand() {
    // Task vectors [1, 1, 0] and [0, 3, 0]: element 0 unique to the first model,
    // element 1 shared (averaged), element 2 untouched.
    let inputs: [&[f32]; 3] = [&[0.0, 0.0, 5.0], &[1.0, 1.0, 5.0], &[0.0, 3.0, 5.0]];
    let ram = Kernel::Ram { base: 0, inputs: 3, epsilon: 0.0, plus: None };
    assert_eq!(run(&ram, &inputs), [1.0, 2.0, 5.0]);
    // ramplus_tl: model 1 has one shared and one unique entry, so rho = 1 and its
    // unique entries scale by 1 + r * clamp(rho, 0, alpha) = 1 + 0.5 * 0.2.
    let plus = Kernel::Ram {
        base: 0,
        inputs: 3,
        epsilon: 0.0,
        plus: Some(RamPlus { r: 0.5, alpha: 0.2 }),
    };
    let out = run(&plus, &inputs);
    assert!((out[0] - 1.1).abs() < 1e-6 && out[1] == 2.0 && out[2] == 5.0, "{out:?}");
}

#[test]
fn passthrough_scales_and_single_inputs_pass() {
    assert_eq!(run(&Kernel::Passthrough { scale: Some(0.5) }, &[&[2.0, -4.0]]), [1.0, -2.0]);
    assert_eq!(run(&Kernel::Passthrough { scale: None }, &[&[2.0, -4.0]]), [2.0, -4.0]);
    let one = Kernel::Linear { weights: vec![0.25], divisor: Some(0.25) };
    assert_eq!(run(&one, &[&[2.0, -4.0]]), [2.0, -4.0]);
}

#[test]
fn slerp_endpoints_and_collinear_fallback() {
    let coefs = |dot, t| match slerp_coefficients(dot, t) {
        Stats::Slerp { coef_a, coef_b } => (coef_a, coef_b),
        other => panic!("{other:?}"),
    };
    assert_eq!(coefs(0.5, 0.0), (1.0, 0.0));
    assert_eq!(coefs(1.0, 0.25), (0.75, 0.25));
    // Orthogonal unit vectors at t = 0.5: both coefficients are sin(pi/4)/sin(pi/2).
    let (a, b) = coefs(0.0, 0.5);
    assert!((a - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    assert_eq!(a, b);
}
