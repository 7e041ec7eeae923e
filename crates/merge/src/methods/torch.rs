//! PyTorch's CPU arithmetic on tensors of a working dtype, for methods mergekit runs in
//! that dtype: every operation's result is rounded to it, reductions accumulate wide and
//! round once, and scalars enter the way torch's kernels take them.
//!
//! The scalar rules were measured on torch 2.15 with bfloat16 tensors: a Python number
//! or a float32 0-dim tensor enters `tensor * s` and `tensor / s` at float32, but is
//! rounded to the tensor's dtype first in `s * tensor` (for a 0-dim tensor), `s + tensor`
//! and `s - tensor`.

use amalgam_tensors::DType;
use amalgam_tensors::dtype::round_to;

use super::reduce;

/// Arithmetic on tensors of one dtype (a no-op rounding in float32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Torch(pub DType);

impl Torch {
    /// An elementwise result, computed in f32, as a tensor of the dtype holds it.
    #[inline(always)]
    pub fn r(self, x: f32) -> f32 {
        round_to(self.0, x)
    }

    /// A scalar where torch rounds it to the dtype before use (see the module notes).
    pub fn scalar(self, x: f64) -> f32 {
        self.r(x as f32)
    }

    /// A sum reduction's result: accumulated wide, rounded once.
    pub fn sum(self, values: impl IntoIterator<Item = f32>) -> f32 {
        self.r(values.into_iter().map(f64::from).sum::<f64>() as f32)
    }

    /// A mean reduction's result.
    pub fn mean(self, values: &[f32]) -> f32 {
        let sum: f64 = values.iter().map(|v| f64::from(*v)).sum();
        self.r((sum / values.len().max(1) as f64) as f32)
    }

    /// `torch.norm` of a contiguous vector of the dtype: torch accumulates the squares
    /// in float32 in its own order (see [`reduce::norm2`]; on long vectors that sum
    /// drifts far more than a 16-bit rounding step) and rounds the result once.
    pub fn norm(self, values: &[f32]) -> f32 {
        self.r(reduce::norm2(values))
    }

    /// The Euclidean norm of a strided vector (a column), accumulated exactly and
    /// rounded once.
    pub fn norm_strided(self, values: &[f32]) -> f32 {
        let squares: f64 = values.iter().map(|v| f64::from(*v).powi(2)).sum();
        self.r(squares.sqrt() as f32)
    }

    /// `torch.dot`: the products summed unrounded, the sum rounded once.
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        self.r(a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum::<f64>() as f32)
    }

    /// `(a * b).sum()`: the products rounded, then summed.
    pub fn dot_of_products(self, a: &[f32], b: &[f32]) -> f32 {
        self.sum(a.iter().zip(b).map(|(x, y)| self.r(x * y)))
    }

    /// `a - b` elementwise.
    pub fn sub(self, a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| self.r(x - y)).collect()
    }

    /// `a + b` elementwise.
    pub fn add(self, a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| self.r(x + y)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_each_result_to_the_dtype() {
        let bf16 = Torch(DType::BF16);
        // 1 + 2^-9 is below bf16's half step at 1: it rounds back to 1.
        assert_eq!(bf16.r(1.0 + 2f32.powi(-9)), 1.0);
        assert_eq!(Torch(DType::F32).r(1.0 + 2f32.powi(-9)), 1.0 + 2f32.powi(-9));
        // A sum rounds once: 256 + 1 + 1 is 258 exactly, where adding in bf16 step by
        // step would give 256 twice over (257 is not a bf16 value).
        assert_eq!(bf16.sum([256.0, 1.0, 1.0]), 258.0);
        assert_eq!(bf16.norm(&[3.0, 4.0]), 5.0);
        assert_eq!(bf16.norm_strided(&[3.0, 4.0]), 5.0);
        assert_eq!(bf16.mean(&[1.0, 2.0]), 1.5);
        assert_eq!(bf16.scalar(0.1), 205.0 / 2048.0, "0.1 rounded to 8 significant bits");
    }
}
