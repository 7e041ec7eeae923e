//! llama-bench's two measurements for amalgam's engine: prompt processing (`pp`: one batch
//! of N tokens into an empty cache) and text generation (`tg`: N single-token steps), in
//! tokens per second, mean ± standard deviation over repetitions, plus peak RSS.
//!
//! `cargo run --release -p amalgam-llama --example bench -- MODEL [-t THREADS] [-p 128]
//! [-n 128] [-r 3]` (MODEL: a model folder or a .gguf file).

use std::path::Path;
use std::time::Instant;

use amalgam_gguf::GgufModel;
use amalgam_llama::forward::Logits;
use amalgam_llama::machine::{peak_rss_mib, physical_cores};
use amalgam_llama::{Config, KvType, Model, Session, TensorSource, pool};
use amalgam_tensors::ModelFolder;

fn arg(args: &[String], flag: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stats(xs: &[f64]) -> (f64, f64) {
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len().max(2) - 1) as f64;
    (mean, var.sqrt())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1).map(Path::new) else {
        eprintln!("usage: bench MODEL [-t THREADS] [-p 128] [-n 128] [-r 3]");
        std::process::exit(2);
    };
    let threads = pool::init(arg(&args, "-t", physical_cores()));
    let (pp, tg, reps) = (arg(&args, "-p", 128), arg(&args, "-n", 128), arg(&args, "-r", 3));
    let gguf;
    let folder;
    let source: &dyn TensorSource = if path.is_file() {
        gguf = GgufModel::open(path).unwrap_or_else(|e| panic!("{e}"));
        &gguf
    } else {
        folder = ModelFolder::open(path).unwrap_or_else(|e| panic!("{e}"));
        &folder
    };
    let config = Config::from_hf(source.config()).unwrap_or_else(|e| panic!("{e}"));
    let model = Model::load(source, config).unwrap_or_else(|e| panic!("{e}"));
    let vocab = model.config.vocab as u32;
    let tokens: Vec<u32> = (0..pp.max(tg) as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let mut session = Session::new(&model, pp + tg + 1, KvType::F16);
    let (mut pp_rates, mut tg_rates) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        session.reset();
        let start = Instant::now();
        session.forward(&tokens[..pp], Logits::Last).unwrap_or_else(|e| panic!("{e}"));
        let pp_rate = pp as f64 / start.elapsed().as_secs_f64();
        session.reset();
        let start = Instant::now();
        for &t in &tokens[..tg] {
            session.forward(&[t], Logits::Last).unwrap_or_else(|e| panic!("{e}"));
        }
        let tg_rate = tg as f64 / start.elapsed().as_secs_f64();
        // The first repetition warms the page cache and the pool.
        if rep > 0 {
            pp_rates.push(pp_rate);
            tg_rates.push(tg_rate);
        }
    }
    let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let (pm, ps) = stats(&pp_rates);
    let (tm, ts) = stats(&tg_rates);
    println!(
        "| {name} | {threads} | pp{pp} {pm:.1} ± {ps:.1} | tg{tg} {tm:.1} ± {ts:.1} | {:.0} MiB |",
        peak_rss_mib().unwrap_or(0.0)
    );
}
