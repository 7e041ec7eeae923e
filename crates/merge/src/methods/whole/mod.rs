//! Methods that need whole tensors at once — global norms, cosines or iterations over the
//! full vector — computed on in-memory copies of the inputs (the executor's memory bound
//! for these is a small multiple of the largest tensor, not of the model).
//!
//! Each follows mergekit's sequence of torch operations in the working dtype (see
//! [`Torch`]): bit-equal to mergekit where reductions round to bfloat16 or float16, and
//! within 1e-5 of each tensor's largest magnitude in float32, where torch sums in
//! another order.

use std::borrow::Cow;

use amalgam_tensors::DType;

use super::reduce;
use super::torch::{Torch, with_torch};

pub mod buffers;
mod fusion;
mod sce;
mod spherical;
mod stock;
#[cfg(any(test, feature = "test-support"))]
mod ties;

pub use fusion::FUSION_BAND;
use fusion::arcee_fusion;
use sce::sce;
use spherical::{Vectors, karcher, multislerp, nuslerp};
use stock::model_stock;

/// A whole-tensor method with its parameters bound.
#[derive(Clone, Debug, PartialEq)]
pub enum Whole {
    /// Model Stock: interpolate between the base and the fine-tunes' average by a ratio
    /// from the fine-tunes' mean pairwise cosine (per row with `filter_wise`).
    ModelStock { base: usize, filter_wise: bool },
    /// The Karcher (Fréchet) mean on the unit sphere, scaled by the mean norm.
    Karcher { max_iter: usize, tol: f32 },
    /// Barycentric interpolation on the hypersphere of the (base-relative) inputs, with
    /// the weights normalised to sum to 1 if `normalize`.
    MultiSlerp {
        base: Option<usize>,
        others: Vec<usize>,
        weights: Vec<f32>,
        normalize: bool,
        eps: f32,
    },
    /// SLERP of two (base-relative) inputs along vectors: the flattened tensor, its rows,
    /// or (row-wise) its columns.
    NuSlerp {
        base: Option<usize>,
        first: usize,
        second: usize,
        t: f64,
        /// One vector of all elements (set for any tensor that is not a matrix).
        flatten: bool,
        row_wise: bool,
    },
    /// The generalized task arithmetic family (ties, dare, breadcrumbs, della).
    Gta(super::gta::Gta),
    /// SCE: select high-variance positions, weight task vectors by their mean square,
    /// erase minority signs.
    Sce { base: usize, select_topk: f32 },
    /// Arcee Fusion: keep the fine-tune's change where its importance (|change| times
    /// the row's KL divergence) is an upper outlier.
    ArceeFusion { base: usize, other: usize, seed: u64 },
}

impl Whole {
    /// Merges whole tensors (`cols` elements per row) in the `working` dtype; the result
    /// is in f32. On CPUs with AVX2 and FMA the same code runs compiled for them: Rust
    /// never fuses `a * b + c` on its own, so both builds give the same bits.
    pub fn merge(&self, inputs: &[Vec<f32>], cols: usize, working: DType) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { self.merge_avx2(inputs, cols, working) };
        }
        with_torch!(working, w => self.merge_in(inputs, cols, working, w))
    }

    /// Whether [`Whole::merge`]'s every value is already rounded to the working dtype (so
    /// rounding it again is a wasted pass over the tensor).
    pub fn rounds_output(&self) -> bool {
        matches!(self, Whole::Karcher { .. } | Whole::MultiSlerp { .. } | Whole::NuSlerp { .. })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn merge_avx2(&self, inputs: &[Vec<f32>], cols: usize, working: DType) -> Vec<f32> {
        with_torch!(working, w => self.merge_in(inputs, cols, working, w))
    }

    #[inline(always)]
    fn merge_in(
        &self,
        inputs: &[Vec<f32>],
        cols: usize,
        working: DType,
        w: impl Torch,
    ) -> Vec<f32> {
        match *self {
            Whole::ModelStock { base, filter_wise } => {
                model_stock(inputs, base, if filter_wise { cols } else { inputs[0].len() }, w)
            }
            Whole::Karcher { max_iter, tol } => karcher(inputs, max_iter, tol, w),
            Whole::Gta(ref gta) => gta.merge(inputs, cols, working),
            Whole::Sce { base, select_topk } => sce(inputs, base, select_topk, |_| true, w),
            Whole::ArceeFusion { base, other, seed } => {
                arcee_fusion(&inputs[base], &inputs[other], cols, seed, w)
            }
            Whole::MultiSlerp { base, ref others, ref weights, normalize, eps } => {
                multislerp(inputs, base, others, weights, normalize, eps, w)
            }
            Whole::NuSlerp { base, first, second, t, flatten, row_wise } => {
                let relative = |i: usize| -> Cow<'_, [f32]> {
                    match base {
                        Some(b) => Cow::Owned(w.sub(&inputs[i], &inputs[b])),
                        None => Cow::Borrowed(&inputs[i]),
                    }
                };
                let (v0, v1) = (relative(first), relative(second));
                let len = v0.len();
                let vectors = if flatten {
                    Vectors::Whole(len)
                } else if row_wise {
                    Vectors::Columns(cols)
                } else {
                    Vectors::Rows(cols)
                };
                let mut out = nuslerp(t, &v0, &v1, vectors, w);
                if let Some(b) = base {
                    out.iter_mut().zip(&inputs[b]).for_each(|(o, x)| *o = w.r(*x + *o));
                }
                out
            }
        }
    }
}

/// Each non-base input minus the base.
fn task_vectors(inputs: &[Vec<f32>], base: usize, w: impl Torch) -> Vec<Vec<f32>> {
    (0..inputs.len()).filter(|&i| i != base).map(|i| w.sub(&inputs[i], &inputs[base])).collect()
}

#[cfg(test)]
mod tests;
