//! `amalgam perplexity`: llama-perplexity's method and output on a text file.

use std::io::Write;
use std::path::PathBuf;

use amalgam_llama::Session;
use amalgam_llama::perplexity::{Options, perplexity};
use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Engine, EngineArgs, Store};

/// Measure a model's perplexity on a text file, as llama.cpp's llama-perplexity does.
///
/// The text (less one trailing newline) is tokenized once and cut into windows of
/// --ctx-size tokens (512 by default; the remainder is dropped). Each window starts
/// afresh, with its first token replaced by BOS when the tokenizer adds one, and the
/// second half of each window is scored. Prints the running perplexity after each window
/// (`[1]18.1234,[2]…`) and the final estimate with its standard error, in llama.cpp's
/// format.
#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// The text to score.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: PathBuf,

    /// Score at most this many windows.
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,

    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Also print a 64-bit FNV-1a hash of every scored logit's bits, so two runs (a
    /// virtual merge and the written one) can be compared bit for bit.
    #[arg(long, hide = true)]
    pub logits_digest: bool,
}

pub fn run(mut args: PerplexityArgs) -> Result<()> {
    args.engine.ctx_size.get_or_insert(512);
    let store = Store::open(&args.engine.model)?;
    let engine = Engine::load(&store, &args.engine)?;
    let assets = &store.assets;
    engine.announce(&store);
    let tokens = store.text_tokens(&args.file)?;
    let ctx = engine.ctx;
    let bos = assets.tokenizer.added_prefix();
    let windows = (tokens.len() / ctx).min(args.chunks.unwrap_or(usize::MAX));
    eprintln!(
        "{} tokens, {} windows of {ctx}{}",
        tokens.len(),
        windows,
        if bos.is_some() { ", BOS first" } else { "" }
    );
    let bar = progress_bar(args.quiet, windows as u64);
    let started = std::time::Instant::now();
    let mut session = Session::new(&engine.model, ctx, engine.kv);
    let options = Options { ctx, batch: engine.batch, bos, max_chunks: args.chunks };
    let mut out = std::io::stdout().lock();
    let mut digest = Fnv::default();
    let estimate = perplexity(&mut session, &tokens, options, |p| {
        if args.logits_digest {
            p.logits.iter().for_each(|l| digest.add(&l.to_bits().to_le_bytes()));
        }
        bar.suspend(|| {
            let _ = write!(out, "[{}]{:.4},", p.chunk, p.ppl).and_then(|()| out.flush());
        });
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    writeln!(out)?;
    writeln!(out, "Final estimate: PPL = {:.4} +/- {:.5}", estimate.ppl, estimate.error)?;
    if args.logits_digest {
        writeln!(out, "logits digest: {:016x}", digest.0)?;
    }
    let peak = amalgam_llama::machine::peak_rss_mib()
        .map_or(String::new(), |m| format!(", peak memory {m:.0} MiB"));
    eprintln!("{} windows in {:.1} s{peak}", estimate.chunks, started.elapsed().as_secs_f64());
    Ok(())
}

/// A 64-bit FNV-1a hash (`.0` once fed).
pub(super) struct Fnv(pub(super) u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(super) fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub(super) fn progress_bar(quiet: bool, windows: u64) -> ProgressBar {
    let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
    let bar = ProgressBar::with_draw_target(Some(windows), target);
    bar.set_style(
        ProgressStyle::with_template("windows {bar:30.cyan/blue} {pos}/{len} (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
