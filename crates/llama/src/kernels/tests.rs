//! The kernels against each other and against dequantize-then-f64: the SIMD kernels give
//! the scalar ones' bits, and both stay within float rounding of the exact product of the
//! values the blocks hold.

use amalgam_gguf::{GgmlType, quant};

use super::*;
use crate::sampling::Rng;

const WEIGHTS: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) as f32) * scale).collect()
}

/// A weight row of `ty` holding random values, and the values it holds.
fn weight_row(rng: &mut Rng, ty: GgmlType, n: usize) -> (Vec<u8>, Vec<f32>) {
    let x = random(rng, n, 0.5);
    let mut bytes = vec![0u8; n / ty.block_size() * ty.type_size()];
    quant::quantize(ty, &x, &mut bytes);
    let mut held = vec![0f32; n];
    quant::dequantize(ty, &bytes, &mut held);
    (bytes, held)
}

/// The values activations hold after preparation for `ty`.
fn held_activations(act: &Activations, ty: GgmlType) -> Vec<f32> {
    let a = activation_type(ty);
    if a == GgmlType::F32 {
        return act.floats(0).to_vec();
    }
    let mut held = vec![0f32; act.cols()];
    quant::dequantize(a, act.blocks(0), &mut held);
    held
}

fn dot_of(kernels: &Kernels, ty: GgmlType, w: &[u8], act: &Activations) -> f32 {
    match kernels.dot(ty) {
        Some(Dot::Float(f)) => f(w, act.floats(0)),
        Some(Dot::Quant(f)) => f(w, act.row(0)),
        None => panic!("{ty} has no dot product"),
    }
}

#[test]
fn simd_kernels_equal_scalar_and_the_exact_product() {
    let mut rng = Rng::new(7);
    for ty in WEIGHTS {
        for n in [256, 512, 1536, 2560] {
            for _ in 0..20 {
                let (w, held_w) = weight_row(&mut rng, ty, n);
                let x = random(&mut rng, n, 3.0);
                let act = Activations::new(ty, &x, n);
                let scalar = dot_of(Kernels::scalar(), ty, &w, &act);
                let best = dot_of(Kernels::best(), ty, &w, &act);
                assert_eq!(scalar.to_bits(), best.to_bits(), "{ty} n={n}: {scalar} vs {best}");
                let held_a = held_activations(&act, ty);
                let exact: f64 =
                    held_w.iter().zip(&held_a).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
                let magnitude: f64 =
                    held_w.iter().zip(&held_a).map(|(&a, &b)| f64::from(a * b).abs()).sum();
                // Each block adds a few f32 roundings (scales, then the running sum):
                // a few units of 2^-24 of the magnitude per block at most, plus the
                // scales' own f16 products.
                let bound = magnitude * 1e-5 + 1e-6 + q8_1_sum_error(ty, &w, &held_a);
                assert!(
                    (f64::from(scalar) - exact).abs() <= bound,
                    "{ty} n={n}: {scalar} vs exact {exact} (bound {bound})"
                );
            }
        }
    }
}

/// Q4_1 and Q5_1 take `m · s` with `s = d · Σq` stored as f16 in the Q8_1 block: each
/// block's term is off by up to half an f16 unit (2^-11 relative) of `|m · Σa|`.
fn q8_1_sum_error(ty: GgmlType, w: &[u8], held_a: &[f32]) -> f64 {
    if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        return 0.0;
    }
    w.chunks_exact(ty.type_size())
        .zip(held_a.chunks_exact(32))
        .map(|(b, a)| {
            let m = half::f16::from_le_bytes([b[2], b[3]]).to_f32();
            let sum: f32 = a.iter().sum();
            f64::from((m * sum).abs()) * 2f64.powi(-11) * 1.01
        })
        .sum()
}

#[test]
fn float_kernels_agree_on_rows_with_a_tail() {
    let mut rng = Rng::new(3);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for n in [1, 7, 31, 33, 64, 100, 576] {
            let (w, _) = weight_row(&mut rng, ty, n);
            let x = random(&mut rng, n, 1.0);
            let act = Activations::new(ty, &x, n);
            let (a, b) =
                (dot_of(Kernels::scalar(), ty, &w, &act), dot_of(Kernels::best(), ty, &w, &act));
            assert_eq!(a.to_bits(), b.to_bits(), "{ty} n={n}");
        }
    }
}

#[test]
fn q8_activations_round_half_to_even_with_127_over_amax() {
    // amax 127 gives id = 1 exactly, so 2.5 and 3.5 sit on rounding midpoints.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -2.5;
    let mut out = vec![0u8; 34];
    activations::quantize_q8_0(&x, &mut out);
    assert_eq!([out[3] as i8, out[4] as i8, out[5] as i8], [2, 4, -2]);
    let mut out1 = vec![0u8; 36];
    activations::quantize_q8_1(&x, &mut out1);
    let sum = 127 + 2 + 4 - 2;
    assert_eq!(half::f16::from_le_bytes([out1[2], out1[3]]).to_f32(), sum as f32);
}

#[test]
fn matmul_is_the_same_for_any_thread_count() {
    let mut rng = Rng::new(11);
    let (rows, cols) = (64, 512);
    for (ty, tokens) in [
        (GgmlType::Q4_1, 3),
        (GgmlType::Q4_1, PANEL + 3),
        (GgmlType::Q8_0, PANEL),
        (GgmlType::Q4K, 3),
        (GgmlType::F16, 3),
        (GgmlType::BF16, FLOAT_TOKENS + 1),
        (GgmlType::F16, 2 * WIDE_TOKENS + 1),
        (GgmlType::BF16, 3 * WIDE_TOKENS),
        (GgmlType::Q5_0, 2 * PANEL + 1),
        (GgmlType::Q6K, PANEL + 1),
    ] {
        let data: Vec<u8> = (0..rows).flat_map(|_| weight_row(&mut rng, ty, cols).0).collect();
        let w = Matrix { ty, rows, cols, data: &data, scale: 1.0 };
        let x = random(&mut rng, tokens * cols, 1.0);
        let act = Activations::new(ty, &x, cols);
        let run = |threads: usize| {
            let pool = Pool::new(threads);
            let mut out = vec![0f32; tokens * rows];
            matmul(&pool, Kernels::best(), &w, &act, &mut out);
            out
        };
        let one = run(1);
        assert_eq!(one, run(2), "{ty}");
        assert_eq!(one, run(3), "{ty}");
        for t in 0..tokens {
            let single = Activations::new(ty, &x[t * cols..(t + 1) * cols], cols);
            for r in 0..rows {
                let d = dot_of(Kernels::best(), ty, w.row(r), &single);
                assert_eq!(d.to_bits(), one[t * rows + r].to_bits(), "{ty} token {t} row {r}");
            }
        }
    }
}

#[test]
fn weighted_sums_equal_one_fma_per_row_in_order() {
    let mut rng = Rng::new(5);
    for (ty, width) in [(GgmlType::F16, 2), (GgmlType::F32, 4)] {
        for n in [1, 8, 13, 64, 72, 128, 200] {
            let (stride, rows) = (n * width + 6, 5);
            // Five rows with gaps between them; the weights ask for a sixth, past the end.
            let mut bytes = vec![0u8; stride * rows];
            let mut held = Vec::new();
            for r in 0..rows {
                let (row, values) = weight_row(&mut rng, ty, n);
                bytes[r * stride..r * stride + n * width].copy_from_slice(&row);
                held.push(values);
            }
            let weights = random(&mut rng, rows + 1, 1.0);
            let base = random(&mut rng, n, 1.0);
            let mut expect = base.clone();
            for (w, row) in weights.iter().zip(&held) {
                for (o, &v) in expect.iter_mut().zip(row) {
                    *o = w.mul_add(v, *o);
                }
            }
            for kernels in Kernels::available() {
                let f = if width == 2 { kernels.weighted_f16 } else { kernels.weighted_f32 };
                let mut out = base.clone();
                f(&weights, &bytes, stride, &mut out);
                assert_eq!(out, expect, "{ty} n={n} {}", kernels.name);
            }
        }
    }
}

#[test]
fn panel_products_equal_one_token_products() {
    let mut rng = Rng::new(13);
    let n = 1536;
    let tokens = 2 * PANEL + 3;
    for ty in WEIGHTS.into_iter().filter(|t| t.is_quantized()) {
        let rows: Vec<Vec<u8>> =
            (0..QUANT_ROWS + 1).map(|_| weight_row(&mut rng, ty, n).0).collect();
        let x = random(&mut rng, tokens * n, 2.0);
        let act = Activations::new(ty, &x, n);
        let Some(Dot::Quant(one)) = Kernels::scalar().dot(ty) else { panic!("{ty}") };
        assert_eq!(act.tiles(), 3);
        for kernels in Kernels::available() {
            for k in 0..act.tiles() {
                // Rows `r0..` of the panel's outputs for tile `k`.
                let outs: Vec<(usize, [f32; PANEL])> = match kernels.panel(ty) {
                    Some(Panel::Quant(panel)) => (0..rows.len())
                        .map(|r| {
                            let mut out = [0f32; PANEL];
                            panel(&rows[r], &act.tile(k), &mut out);
                            (r, out)
                        })
                        .collect(),
                    Some(Panel::QuantRows(panel)) => [0, 1]
                        .into_iter()
                        .flat_map(|r0| {
                            let mut out = [[0f32; PANEL]; QUANT_ROWS];
                            let w = std::array::from_fn(|i| rows[r0 + i].as_slice());
                            panel(w, &act.tile(k), &mut out);
                            (r0..).zip(out)
                        })
                        .collect(),
                    _ => panic!("{ty} has no quantized panel in {}", kernels.name),
                };
                for (r, out) in outs {
                    for (t, &v) in out.iter().enumerate() {
                        // Past the batch, the tile repeats its last token.
                        let token = (k * PANEL + t).min(tokens - 1);
                        let expect = one(&rows[r], act.row(token));
                        assert_eq!(
                            v.to_bits(),
                            expect.to_bits(),
                            "{ty} {} row {r} token {token}: {v} vs {expect}",
                            kernels.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn float_panel_products_equal_one_token_products() {
    let mut rng = Rng::new(17);
    let tokens = WIDE_TOKENS + 1;
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for n in [7, 100, 576] {
            let rows: Vec<Vec<u8>> =
                (0..WIDE_ROWS + 1).map(|_| weight_row(&mut rng, ty, n).0).collect();
            let x = random(&mut rng, tokens * n, 1.0);
            let act = Activations::new(ty, &x, n);
            let Some(Dot::Float(one)) = Kernels::scalar().dot(ty) else { panic!("{ty}") };
            for kernels in Kernels::available() {
                let what = format!("{ty} n={n} {}", kernels.name);
                match kernels.panel(ty) {
                    Some(Panel::Float(f)) => check_float_panel(f, &rows, &act, one, &what),
                    Some(Panel::Wide(f)) => check_float_panel(f, &rows, &act, one, &what),
                    _ => panic!("{what} has no float panel"),
                }
            }
        }
    }
}

/// Runs `panel` from rows 0 and 1 over its first two tiles and compares each output with
/// the one-token kernel `one`.
fn check_float_panel<const R: usize, const T: usize>(
    panel: FloatPanelOf<R, T>,
    rows: &[Vec<u8>],
    act: &Activations,
    one: FloatDot,
    what: &str,
) {
    for (r0, k) in [(0, 0), (1, 0), (1, 1)] {
        let mut out = [[0f32; T]; R];
        panel(std::array::from_fn(|i| rows[r0 + i].as_slice()), &act.float_tile(k), &mut out);
        for (i, out) in out.iter().enumerate() {
            for (t, &v) in out.iter().enumerate() {
                // Past the batch, the tile repeats its last token.
                let token = (k * T + t).min(act.tokens() - 1);
                let expect = one(&rows[r0 + i], act.floats(token));
                assert_eq!(v.to_bits(), expect.to_bits(), "{what} row {} token {token}", r0 + i);
            }
        }
    }
}

#[test]
fn gemm_products_equal_one_token_products() {
    let mut rng = Rng::new(19);
    let (rows, cols) = (11, 1536);
    // Two 16-token vectors at a time, then one, the last part full.
    let tokens = 3 * token_lanes::LANE_TOKENS + 5;
    let mut ran = 0;
    for ty in WEIGHTS.into_iter().filter(|t| t.block_size() == 256) {
        let data: Vec<u8> = (0..rows).flat_map(|_| weight_row(&mut rng, ty, cols).0).collect();
        let w = Matrix { ty, rows, cols, data: &data, scale: 1.0 };
        let x = random(&mut rng, tokens * cols, 2.0);
        let act = Activations::new(ty, &x, cols);
        let Some(Dot::Quant(one)) = Kernels::scalar().dot(ty) else { panic!("{ty}") };
        for kernels in Kernels::available() {
            let Some(gemm) = kernels.gemm(ty) else { continue };
            let mut out = vec![0f32; tokens * rows];
            gemm(&Pool::new(2), &w, &act, &mut out);
            for t in 0..tokens {
                for r in 0..rows {
                    let (v, expect) = (out[t * rows + r], one(w.row(r), act.row(t)));
                    let what = format!("{ty} {} row {r} token {t}", kernels.name);
                    assert_eq!(v.to_bits(), expect.to_bits(), "{what}: {v} vs {expect}");
                }
            }
            ran += 1;
        }
    }
    let expect =
        if Kernels::available().iter().any(|k| k.gemm(GgmlType::Q4K).is_some()) { 5 } else { 0 };
    assert_eq!(ran, expect, "every K-quant type has its batch product where there is one");
}

#[test]
fn softmax_kernels_equal_scalar() {
    let mut rng = Rng::new(23);
    for n in [0, 1, 3, 8, 13, 16, 40, 100, 515] {
        // Spreads wide enough that some scores underflow to 0 (below ln 2^-150).
        for spread in [1.0, 30.0, 2000.0] {
            let x = random(&mut rng, n, spread);
            let mut expect = x.clone();
            softmax::softmax(&mut expect, 0.125);
            for kernels in Kernels::available() {
                let mut got = x.clone();
                (kernels.softmax)(&mut got, 0.125);
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&expect), "{} n={n} spread {spread}", kernels.name);
            }
        }
    }
}

#[test]
fn weighted_sums_of_several_outputs_equal_one_at_a_time() {
    let mut rng = Rng::new(29);
    for (ty, width) in [(GgmlType::F16, 2), (GgmlType::F32, 4)] {
        for (n, outputs) in [(64, 6), (64, 9), (128, 4), (80, 2), (8, 3), (200, 7)] {
            let (stride, rows) = (n * width + 4, 11);
            let mut bytes = vec![0u8; stride * rows];
            for r in 0..rows {
                let (row, _) = weight_row(&mut rng, ty, n);
                bytes[r * stride..r * stride + n * width].copy_from_slice(&row);
            }
            let weights: Vec<Vec<f32>> =
                (0..outputs).map(|_| random(&mut rng, rows, 1.0)).collect();
            let w: Vec<&[f32]> = weights.iter().map(Vec::as_slice).collect();
            let base: Vec<Vec<f32>> = (0..outputs).map(|_| random(&mut rng, n, 1.0)).collect();
            for kernels in Kernels::available() {
                let (one, many) = if width == 2 {
                    (kernels.weighted_f16, kernels.weighted_many_f16)
                } else {
                    (kernels.weighted_f32, kernels.weighted_many_f32)
                };
                let mut expect = base.clone();
                for (w, o) in w.iter().zip(&mut expect) {
                    one(w, &bytes, stride, o);
                }
                let mut got = base.clone();
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(Vec::as_mut_slice).collect();
                many(&w, &bytes, stride, &mut outs);
                assert_eq!(got, expect, "{ty} n={n} outputs {outputs} {}", kernels.name);
            }
        }
    }
}
