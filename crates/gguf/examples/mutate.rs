//! Random-mutation robustness run of the GGUF header parser, in release mode, with a
//! count to report: `cargo run --release -p amalgam-gguf --example mutate -- [N] [FILE]`.
//! Mutates 1-4 header bytes of FILE (default: tests/data/gguf/tiny-kq-Q8_0.gguf) N times
//! (default 10^6) and checks every outcome is an error or a header whose tensors lie in
//! the file. A panic would abort the run.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let path = args.next().unwrap_or_else(|| "tests/data/gguf/tiny-kq-Q8_0.gguf".into());
    let good = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let header_len = amalgam_gguf::read::parse(&good).expect("a valid file").data_start as usize;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let started = Instant::now();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut bytes = good.clone();
    for _ in 0..n {
        let mut changed = Vec::new();
        for _ in 0..1 + next() % 4 {
            let at = (next() % header_len as u64) as usize;
            changed.push(at);
            bytes[at] = match next() % 3 {
                0 => next() as u8,
                1 => bytes[at] ^ (1 << (next() % 8)),
                _ => 0xFF,
            };
        }
        match amalgam_gguf::read::parse(&bytes) {
            Ok(h) => {
                assert!(
                    h.tensors
                        .iter()
                        .all(|t| h.data_start + t.offset + t.size <= bytes.len() as u64)
                );
                accepted += 1;
            }
            Err(_) => rejected += 1,
        }
        for at in changed {
            bytes[at] = good[at];
        }
    }
    println!(
        "{n} mutations of {path}: {rejected} rejected with an error, {accepted} accepted (in bounds), 0 panics, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
