//! Whole-tensor methods by hand: small cases whose results are known exactly.

use super::*;

const F32: super::super::torch::F32 = super::super::torch::F32;

#[test]
fn model_stock_of_identical_offsets_is_the_average() {
    // Collinear offsets: cos = 1, t = N / (1 + N - 1) = 1, so the output is the mean.
    let base = vec![1.0, 1.0];
    let a = vec![2.0, 3.0];
    let b = vec![3.0, 5.0];
    let out = model_stock(&[base, a, b], 0, 2, F32);
    assert!((out[0] - 2.5).abs() < 1e-6 && (out[1] - 4.0).abs() < 1e-6, "{out:?}");
}

#[test]
fn sce_by_hand() {
    let inputs = [vec![0.0; 4], vec![1.0, -1.0, 2.0, 0.0], vec![3.0, 1.0, -1.0, 0.0]];
    // Weights mean(tau^2): 1.5 and 2.75, normalised. Element 0: both positive, weighted
    // mean; 1: sum 0 counts as positive, so only +1; 2: sum 1, only +2; 3: nothing.
    let (c1, c2) = (1.5 / 4.25, 2.75 / 4.25);
    let expected = [(c1 + 3.0 * c2) / (c1 + c2), 1.0, 2.0, 0.0];
    let out = sce(&inputs, 0, 1.0, |_| true, F32);
    assert!(out.iter().zip(expected).all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6), "{out:?}");
    // select_topk 0.5 of 3 non-zero variances keeps one position: element 2 (2.25).
    assert_eq!(sce(&inputs, 0, 0.5, |_| true, F32), [0.0, 0.0, 2.0, 0.0]);
    assert_eq!(sce(&inputs[..1], 0, 0.5, |_| true, F32), [0.0; 4], "no task vectors");
}

#[test]
fn arcee_fusion_keeps_only_the_outlier_change() {
    // One row: importance is |change| times the row's KL divergence, so the
    // threshold is median + 1.5 IQR of the changes: 0.4 + 1.5 * (0.6 - 0.2) = 1.0.
    let b = vec![0.0f32; 8];
    let x = vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 5.0];
    let out = arcee_fusion(&b, &x, 8, 0, F32);
    assert_eq!(out, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0]);
    assert_eq!(arcee_fusion(&b, &b, 8, 0, F32), b, "no change, nothing kept");
}

#[test]
fn karcher_of_equal_norm_orthogonal_vectors_bisects() {
    let out = karcher(&[vec![1.0, 0.0], vec![0.0, 1.0]], 20, 1e-7, F32);
    let h = std::f32::consts::FRAC_1_SQRT_2;
    assert!((out[0] - h).abs() < 1e-5 && (out[1] - h).abs() < 1e-5, "{out:?}");
}

#[test]
fn nuslerp_rows_and_columns() {
    // [[1, 0], [1, 0]] toward [[0, 1], [1, 0]] at t = 0.5.
    let (v0, v1) = (vec![1.0, 0.0, 1.0, 0.0], vec![0.0, 1.0, 1.0, 0.0]);
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let rows = nuslerp(0.5, &v0, &v1, Vectors::Rows(2), F32);
    let expected = [h, h, 1.0, 0.0];
    assert!(rows.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{rows:?}");
    // Column 0 is [1, 1] toward [0, 1], 45 degrees apart.
    let columns = nuslerp(0.5, &v0, &v1, Vectors::Columns(2), F32);
    let a = ((std::f64::consts::PI / 8.0).sin() / (std::f64::consts::PI / 4.0).sin()) as f32;
    assert!((columns[0] - a).abs() < 1e-6 && (columns[2] - 2.0 * a).abs() < 1e-6, "{columns:?}");
    // A 1×2 matrix row-wise: two one-element columns, each collinear, so lerp.
    assert_eq!(nuslerp(0.5, &[1.0, 2.0], &[3.0, 4.0], Vectors::Columns(2), F32), [2.0, 3.0]);
}
