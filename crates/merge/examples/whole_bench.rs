//! Times the whole-tensor methods on in-memory tensors of one Llama MLP matrix's size
//! (2048 x 5632, bfloat16 arithmetic), with no file reading or writing: the compute part
//! of `scripts/bench-merge`'s nuslerp, multislerp and karcher merges. Figures, not a test.
//!
//! `cargo run --release -p amalgam-merge --example whole_bench [REPEATS]`

use std::time::Instant;

use amalgam_merge::methods::whole::Whole;
use amalgam_tensors::DType;

fn main() {
    let repeats: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let (rows, cols) = (5632, 2048);
    let inputs: Vec<Vec<f32>> = (0..2u64).map(|seed| values(rows * cols, seed)).collect();
    let methods = [
        (
            "nuslerp",
            Whole::NuSlerp {
                base: None,
                first: 0,
                second: 1,
                t: 0.5,
                flatten: true,
                row_wise: false,
            },
        ),
        (
            "multislerp",
            Whole::MultiSlerp {
                base: None,
                others: vec![0, 1],
                weights: vec![0.5, 0.5],
                normalize: true,
                eps: 1e-8,
            },
        ),
        ("karcher", Whole::Karcher { max_iter: 10, tol: 1e-5 }),
    ];
    for (name, method) in methods {
        let mut best = f64::INFINITY;
        for _ in 0..repeats {
            let start = Instant::now();
            let out = method.merge(&inputs, cols, DType::BF16);
            best = best.min(start.elapsed().as_secs_f64());
            std::hint::black_box(out);
        }
        let rate = (rows * cols) as f64 / best / 1e6;
        println!("{name:<11} {:8.1} ms  {rate:7.1} M elements/s (best of {repeats})", best * 1e3);
    }
}

/// Reproducible bfloat16-valued weights of about 0.02 in size.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            f32::from_bits((unit * 0.04).to_bits() & 0xFFFF_0000)
        })
        .collect()
}
