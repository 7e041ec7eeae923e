//! Reductions in the exact floating-point order of PyTorch's CPU kernels (the AVX2
//! kernels, which torch dispatches to even on AVX-512 machines), so that whole-tensor
//! statistics such as slerp's norms and cosine match mergekit to the bit.
//!
//! Orders were read from ATen (`ReduceOpsKernel.cpp` `norm_kernel_tensor_iterator_impl`,
//! `SumKernel.cpp` `cascade_sum`, `TensorIteratorReduce.cpp` `parallel_reduce`) and checked
//! against torch 2.15's binary; `reduce_matches_torch` pins values torch computed.

/// Float lanes of torch's AVX2 vectors.
const LANES: usize = 8;

/// torch's intra-op thread count on the reference machine (2 cores). Sums of 32768 or
/// more elements are split across threads and the partial sums added, so mergekit's
/// result for such tensors depends on how many cores its machine had.
pub const TORCH_THREADS: usize = 2;

/// Elements below which torch reduces on one thread (`at::internal::GRAIN_SIZE`).
const GRAIN_SIZE: usize = 32768;

/// `fma(x[i], w, acc[i])` for every element, with hardware FMA when the CPU has it
/// (torch's `addcmul_` compiles to a fused multiply-add).
pub fn fma_accumulate(acc: &mut [f32], x: &[f32], w: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports FMA, checked just above.
        unsafe { fma_accumulate_x86(acc, x, w) };
        return;
    }
    fma_accumulate_portable(acc, x, w);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn fma_accumulate_x86(acc: &mut [f32], x: &[f32], w: f32) {
    fma_accumulate_portable(acc, x, w);
}

#[inline(always)]
fn fma_accumulate_portable(acc: &mut [f32], x: &[f32], w: f32) {
    for (a, x) in acc.iter_mut().zip(x) {
        *a = x.mul_add(w, *a);
    }
}

/// The 2-norm of a contiguous vector, as `torch.linalg.vector_norm(x, dim=-1)`: squares
/// added into one 8-lane accumulator (multiply, then add), lanes summed in order, then a
/// tail of four unfused and up to three fused steps.
#[inline(always)]
pub fn norm2(x: &[f32]) -> f32 {
    let mut norm = Norm2::default();
    norm.feed(x);
    norm.finish()
}

/// [`norm2`] of a vector fed in order, in pieces whose lengths are whole multiples of
/// the 8 lanes but for the last: the same bits, without a second pass over the vector.
#[derive(Clone, Copy, Debug, Default)]
pub struct Norm2 {
    acc: [f32; LANES],
    /// The last piece's elements past its whole lanes.
    tail: [f32; LANES],
    tail_len: usize,
    count: usize,
}

impl Norm2 {
    /// Adds the next `piece` of the vector.
    #[inline(always)]
    pub fn feed(&mut self, piece: &[f32]) {
        debug_assert_eq!(self.tail_len, 0, "only the last piece may end inside a lane");
        let blocks = piece.chunks_exact(LANES);
        let tail = blocks.remainder();
        for block in blocks {
            for (a, v) in self.acc.iter_mut().zip(block) {
                *a += v * v;
            }
        }
        self.tail[..tail.len()].copy_from_slice(tail);
        self.tail_len = tail.len();
        self.count += piece.len();
    }

    /// The norm of everything fed.
    #[inline(always)]
    pub fn finish(&self) -> f32 {
        let mut tail = &self.tail[..self.tail_len];
        if self.count == 1 {
            return tail.first().map_or(0.0, |v| v.abs());
        }
        let mut s = self.acc.iter().skip(1).fold(self.acc[0], |s, a| s + a);
        if tail.len() >= 4 {
            for v in &tail[..4] {
                s += v * v;
            }
            tail = &tail[4..];
        }
        for v in tail {
            s = v.mul_add(*v, s);
        }
        s.sqrt()
    }
}

/// The sum of a contiguous vector, as `x.sum(dim=-1)` with [`TORCH_THREADS`] threads.
pub fn sum(x: &[f32]) -> f32 {
    if x.len() < GRAIN_SIZE || TORCH_THREADS == 1 {
        return inner_sum(x);
    }
    let parts = TORCH_THREADS.min(x.len().div_ceil(GRAIN_SIZE));
    let chunk = x.len().div_ceil(parts);
    let mut partial = [0f32; TORCH_THREADS];
    for (p, piece) in partial.iter_mut().zip(x.chunks(chunk)) {
        *p = inner_sum(piece);
    }
    inner_sum(&partial)
}

/// One thread's cascade sum: 8-lane blocks summed lane-wise, then the scalar tail, then
/// the lanes in order.
fn inner_sum(x: &[f32]) -> f32 {
    if x.len() < LANES {
        return row_sum::<1>(x)[0];
    }
    let whole = x.len() / LANES * LANES;
    let lanes = row_sum::<LANES>(&x[..whole]);
    let tail = x[whole..].iter().fold(0f32, |s, v| s + v);
    lanes.iter().fold(tail, |s, v| s + v)
}

/// Sums items of `W` lanes with four interleaved accumulators (torch's `row_sum`).
fn row_sum<const W: usize>(items: &[f32]) -> [f32; W] {
    let size = items.len() / W;
    let rows = size / 4;
    let [mut p0, p1, p2, p3] = multi_row_sum::<W>(&items[..rows * 4 * W], rows);
    for item in items[rows * 4 * W..].chunks_exact(W) {
        add(&mut p0, item);
    }
    add(&mut p0, &p1);
    add(&mut p0, &p2);
    add(&mut p0, &p3);
    p0
}

/// Sums `size` rows of four `W`-lane columns with torch's four-level cascade, which
/// bounds the error growth of long sums.
fn multi_row_sum<const W: usize>(rows: &[f32], size: usize) -> [[f32; W]; 4] {
    const LEVELS: usize = 4;
    let log = (ceil_log2(size) / LEVELS).max(4);
    let step = 1usize << log;
    let mask = step - 1;
    let mut acc = [[[0f32; W]; 4]; LEVELS];
    let row = |i: usize, k: usize| &rows[(i * 4 + k) * W..(i * 4 + k + 1) * W];
    let mut i = 0;
    while i + step <= size {
        for _ in 0..step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                add(a, row(i, k));
            }
            i += 1;
        }
        for level in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(level);
            for (hi, lo) in upper[0].iter_mut().zip(lower[level - 1].iter_mut()) {
                add(hi, lo);
                *lo = [0f32; W];
            }
            if i & (mask << (level * log)) != 0 {
                break;
            }
        }
    }
    while i < size {
        for (k, a) in acc[0].iter_mut().enumerate() {
            add(a, row(i, k));
        }
        i += 1;
    }
    let (first, rest) = acc.split_at_mut(1);
    for upper in rest.iter() {
        for (a, u) in first[0].iter_mut().zip(upper) {
            add(a, u);
        }
    }
    acc[0]
}

fn ceil_log2(x: usize) -> usize {
    if x <= 2 { 1 } else { (usize::BITS - (x - 1).leading_zeros()) as usize }
}

#[inline(always)]
fn add<const W: usize>(acc: &mut [f32; W], x: &[f32]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible vector: x[i] from a 64-bit LCG, uniform in [-1, 1).
    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn small_cases_by_hand() {
        assert_eq!(norm2(&[3.0, 4.0]), 5.0);
        assert_eq!(norm2(&[-2.5]), 2.5);
        assert_eq!(sum(&[1.0, 2.0, 3.0]), 6.0);
        assert_eq!(sum(&[]), 0.0);
        assert_eq!(ceil_log2(1), 1);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(1024), 10);
        assert_eq!(ceil_log2(1025), 11);
    }

    #[test]
    fn reduce_matches_torch() {
        // (n, seed, norm bits, sum bits) computed by torch 2.15 (AVX2 kernels, 2 threads)
        // on the same LCG vectors, see scripts/torch-reduce-reference.py.
        for &(n, seed, norm_bits, sum_bits) in TORCH_REFERENCE {
            let x = lcg(n, seed);
            assert_eq!(norm2(&x).to_bits(), norm_bits, "norm n={n}");
            assert_eq!(sum(&x).to_bits(), sum_bits, "sum n={n}");
        }
    }

    #[test]
    fn a_norm_fed_in_pieces_is_the_norm_of_the_whole() {
        for &(n, seed, norm_bits, _) in TORCH_REFERENCE {
            let x = lcg(n, seed);
            for piece in [8, 16, 256] {
                let mut norm = Norm2::default();
                x.chunks(piece).for_each(|p| norm.feed(p));
                assert_eq!(norm.finish().to_bits(), norm_bits, "n={n} in pieces of {piece}");
            }
        }
    }

    const TORCH_REFERENCE: &[(usize, u64, u32, u32)] = &[
        (1, 1, 0x3e1d4488, 0xbe1d4488),
        (5, 2, 0x3f9f2c94, 0x3f65a1fa),
        (8, 3, 0x3f895666, 0xbf7d3a46),
        (13, 4, 0x401e1d88, 0xbeca38fc),
        (100, 5, 0x40bf539b, 0xc0cde566),
        (1000, 6, 0x4191cff3, 0x417a9d64),
        (4099, 7, 0x4214051b, 0xc1852fd8),
        (32768, 8, 0x42d14922, 0xc2ebe81f),
        (65537, 9, 0x4313ff6a, 0xc3158834),
        (100003, 10, 0x43364bd7, 0x4395107c),
        (1048576, 11, 0x4413cefd, 0xc31eb00a),
    ];
}
