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

/// Arithmetic on tensors of one dtype. Each dtype is its own type, so the rounding is
/// resolved at compile time and the loops stay vectorized.
pub trait Torch: Copy {
    /// The dtype tensors hold.
    const DTYPE: DType;

    /// An elementwise result, computed in f32, as a tensor of the dtype holds it.
    #[inline(always)]
    fn r(self, x: f32) -> f32 {
        round_to(Self::DTYPE, x)
    }

    /// A scalar where torch rounds it to the dtype before use (see the module notes).
    #[inline(always)]
    fn scalar(self, x: f64) -> f32 {
        self.r(x as f32)
    }

    /// A sum reduction's result (of a few values, such as one per model): accumulated
    /// in f64, rounded once.
    #[inline(always)]
    fn sum(self, values: impl IntoIterator<Item = f32>) -> f32 {
        self.r(values.into_iter().map(f64::from).sum::<f64>() as f32)
    }

    /// A mean reduction's result.
    #[inline(always)]
    fn mean(self, values: &[f32]) -> f32 {
        let sum = wide_sum(values.iter().map(|v| f64::from(*v)));
        self.r((sum / values.len().max(1) as f64) as f32)
    }

    /// `torch.norm` of a contiguous vector of the dtype: torch accumulates the squares
    /// in float32 in its own order (see [`reduce::norm2`]; on long vectors that sum
    /// drifts far more than a 16-bit rounding step) and rounds the result once.
    #[inline(always)]
    fn norm(self, values: &[f32]) -> f32 {
        self.r(reduce::norm2(values))
    }

    /// The Euclidean norm of a strided vector (a column), accumulated exactly and
    /// rounded once.
    #[inline(always)]
    fn norm_strided(self, values: &[f32]) -> f32 {
        self.r(wide_dot(values, values).sqrt() as f32)
    }

    /// `torch.dot`: the products summed unrounded, the sum rounded once.
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        self.r(wide_dot(a, b) as f32)
    }

    /// `(a * b).sum()`: the products rounded, then summed.
    #[inline(always)]
    fn dot_of_products(self, a: &[f32], b: &[f32]) -> f32 {
        self.r(wide_sum_zip(a, b, |x, y| self.r(x * y)) as f32)
    }

    /// `a - b` elementwise.
    #[inline(always)]
    fn sub(self, a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| self.r(x - y)).collect()
    }

    /// `a + b` elementwise.
    #[inline(always)]
    fn add(self, a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| self.r(x + y)).collect()
    }
}

/// bfloat16 tensors.
#[derive(Clone, Copy, Debug)]
pub struct Bf16;

/// float16 tensors.
#[derive(Clone, Copy, Debug)]
pub struct F16;

/// float32 tensors (rounding is a no-op).
#[derive(Clone, Copy, Debug)]
pub struct F32;

impl Torch for Bf16 {
    const DTYPE: DType = DType::BF16;
}

impl Torch for F16 {
    const DTYPE: DType = DType::F16;
}

impl Torch for F32 {
    const DTYPE: DType = DType::F32;
}

/// Lanes of the wide sums: independent accumulators, so long sums are not one chain of
/// dependent additions.
const WIDE: usize = 8;

/// A long sum in f64, accumulated round-robin in [`WIDE`] lanes.
#[inline(always)]
fn wide_sum(values: impl Iterator<Item = f64>) -> f64 {
    let mut acc = [0f64; WIDE];
    for (i, v) in values.enumerate() {
        acc[i % WIDE] += v;
    }
    acc.iter().sum()
}

/// `Σ f(a_i, b_i)` in f64, accumulated in the lanes of [`wide_sum`] (the same bits as
/// `wide_sum` of the values in order): for sums of values computed on the fly rather
/// than stored.
#[inline(always)]
pub(super) fn wide_sum_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut sum = WideSum::default();
    sum.add_zip(a, b, f);
    sum.total()
}

/// A [`wide_sum`] of values computed on the fly, added in pieces whose lengths are whole
/// multiples of the lanes but for the last (so every value still lands in the lane of
/// its index).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct WideSum {
    acc: [f64; WIDE],
}

impl WideSum {
    /// Adds `f(a_i, b_i)` for the next piece. The values are computed a block at a time
    /// into a buffer, a plain elementwise loop the compiler vectorizes, then added lane
    /// by lane.
    #[inline(always)]
    pub(super) fn add_zip(&mut self, a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
        const BLOCK: usize = 32 * WIDE;
        let mut values = [0f32; BLOCK];
        for (x, y) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
            let values = &mut values[..x.len().min(y.len())];
            for ((v, p), q) in values.iter_mut().zip(x).zip(y) {
                *v = f(*p, *q);
            }
            let rounds = values.chunks_exact(WIDE);
            let tail = rounds.remainder();
            for round in rounds {
                for (a, v) in self.acc.iter_mut().zip(round) {
                    *a += f64::from(*v);
                }
            }
            for (a, v) in self.acc.iter_mut().zip(tail) {
                *a += f64::from(*v);
            }
        }
    }

    /// The lanes added in order.
    #[inline(always)]
    pub(super) fn total(&self) -> f64 {
        self.acc.iter().sum()
    }
}

/// `Σ a_i b_i` in f64 (exact products of 16-bit values), in [`WIDE`] lanes.
#[inline(always)]
fn wide_dot(a: &[f32], b: &[f32]) -> f64 {
    let mut dot = WideDot::default();
    dot.add(a, b);
    dot.total()
}

/// [`wide_dot`] of vectors taken in pieces whose lengths are whole multiples of the lanes
/// but for the last: the same bits, so a dot can share a pass with other work.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct WideDot {
    acc: [f64; WIDE],
    /// The last piece's products past its whole lanes, summed on their own.
    tail: f64,
}

impl WideDot {
    /// Adds the products of the next pieces of the two vectors.
    #[inline(always)]
    pub(super) fn add(&mut self, a: &[f32], b: &[f32]) {
        let (blocks_a, blocks_b) = (a.chunks_exact(WIDE), b.chunks_exact(WIDE));
        self.tail = blocks_a
            .remainder()
            .iter()
            .zip(blocks_b.remainder())
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        for (x, y) in blocks_a.zip(blocks_b) {
            for l in 0..WIDE {
                self.acc[l] += f64::from(x[l]) * f64::from(y[l]);
            }
        }
    }

    /// The lanes added in order, then the tail.
    #[inline(always)]
    pub(super) fn total(&self) -> f64 {
        self.acc.iter().sum::<f64>() + self.tail
    }
}

/// Runs `$body` with `$w` bound to the [`Torch`] type of `$dtype` (float32 arithmetic
/// for float32 and float64).
macro_rules! with_torch {
    ($dtype:expr, $w:ident => $body:expr) => {
        match $dtype {
            amalgam_tensors::DType::BF16 => {
                let $w = $crate::methods::torch::Bf16;
                $body
            }
            amalgam_tensors::DType::F16 => {
                let $w = $crate::methods::torch::F16;
                $body
            }
            amalgam_tensors::DType::F32 | amalgam_tensors::DType::F64 => {
                let $w = $crate::methods::torch::F32;
                $body
            }
        }
    };
}
pub(crate) use with_torch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_each_result_to_the_dtype() {
        let bf16 = Bf16;
        // 1 + 2^-9 is below bf16's half step at 1: it rounds back to 1.
        assert_eq!(bf16.r(1.0 + 2f32.powi(-9)), 1.0);
        assert_eq!(F32.r(1.0 + 2f32.powi(-9)), 1.0 + 2f32.powi(-9));
        assert_eq!(F16.r(1.0 + 2f32.powi(-12)), 1.0, "float16 keeps 10 fraction bits");
        // A sum rounds once: 256 + 1 + 1 is 258 exactly, where adding in bf16 step by
        // step would give 256 twice over (257 is not a bf16 value).
        assert_eq!(bf16.sum([256.0, 1.0, 1.0]), 258.0);
        assert_eq!(bf16.norm(&[3.0, 4.0]), 5.0);
        assert_eq!(bf16.norm_strided(&[3.0, 4.0]), 5.0);
        assert_eq!(bf16.mean(&[1.0, 2.0]), 1.5);
        assert_eq!(bf16.scalar(0.1), 205.0 / 2048.0, "0.1 rounded to 8 significant bits");
    }

    /// Values whose f64 sum depends on which lane each lands in: two huge ones in lanes 0
    /// and 1 that cancel only when the lanes are added, so a value of the last partial
    /// round survives in its own lane and is lost if added into lane 0.
    fn cancelling(n: usize) -> Vec<f32> {
        let last_round = n / WIDE * WIDE;
        let value = |i: usize| match i {
            0 => 1e30,
            1 => -1e30,
            _ if i >= last_round => 1.0 + i as f32,
            _ => 0.5,
        };
        (0..n).map(value).collect()
    }

    /// wide_dot's order written out plainly: whole rounds of 8 lanes by index, the last
    /// partial round summed on its own, then the lanes in order and the tail.
    fn plain_dot(a: &[f32], b: &[f32]) -> f64 {
        let whole = a.len() / WIDE * WIDE;
        let mut lanes = [0f64; WIDE];
        for i in 0..whole {
            lanes[i % WIDE] += f64::from(a[i]) * f64::from(b[i]);
        }
        let tail: f64 = (whole..a.len()).map(|i| f64::from(a[i]) * f64::from(b[i])).sum();
        lanes.iter().sum::<f64>() + tail
    }

    #[test]
    fn dots_whole_and_in_pieces_add_in_wide_dots_order() {
        for n in [0, 1, 7, 8, 9, 15, 100, 1001] {
            let a = cancelling(n);
            let b = vec![1f32; n];
            let expected = plain_dot(&a, &b).to_bits();
            assert_eq!(wide_dot(&a, &b).to_bits(), expected, "{n} values");
            let mut pieces = WideDot::default();
            a.chunks(16).zip(b.chunks(16)).for_each(|(x, y)| pieces.add(x, y));
            assert_eq!(pieces.total().to_bits(), expected, "{n} values in pieces");
        }
    }

    #[test]
    fn a_sum_of_computed_values_adds_in_the_lanes_of_a_stored_sum() {
        for n in [0, 1, 7, 8, 9, 15, 100, 1001] {
            let a = cancelling(n);
            let stored = wide_sum(a.iter().map(|x| f64::from(*x)));
            let computed = wide_sum_zip(&a, &a, |x, _| x);
            assert_eq!(computed.to_bits(), stored.to_bits(), "{n} values");
            let mut pieces = WideSum::default();
            a.chunks(16).for_each(|x| pieces.add_zip(x, x, |x, _| x));
            assert_eq!(pieces.total().to_bits(), stored.to_bits(), "{n} values in pieces");
        }
    }
}
