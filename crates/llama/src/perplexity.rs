//! Perplexity as `llama-perplexity` computes it: the text tokenized once, cut into
//! windows of `ctx` tokens (the rest dropped), the first token of each window replaced by
//! BOS when the model adds one, and the second half of every window scored.

use crate::error::{Error, Result};
use crate::forward::{Logits, Session};

/// The running figures after each window.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// 1-based window index.
    pub chunk: usize,
    pub chunks: usize,
    /// Perplexity over every window so far.
    pub ppl: f64,
    /// The window's scored logits (its second half less the last position, row-major).
    pub logits: &'a [f32],
}

/// The final estimate.
#[derive(Clone, Copy, Debug)]
pub struct Estimate {
    pub ppl: f64,
    /// One standard error, in perplexity units.
    pub error: f64,
    pub scored: usize,
    pub chunks: usize,
}

/// Settings of a perplexity run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub ctx: usize,
    /// Tokens per forward call.
    pub batch: usize,
    /// The BOS id put at each window's first position, if the model adds BOS.
    pub bos: Option<u32>,
    /// Score at most this many windows.
    pub max_chunks: Option<usize>,
}

/// Scores `tokens` window by window on `session` (whose context must hold `ctx`).
pub fn perplexity(
    session: &mut Session,
    tokens: &[u32],
    options: Options,
    mut progress: impl FnMut(Progress),
) -> Result<Estimate> {
    let ctx = options.ctx;
    if ctx < 4 || tokens.len() < 2 * ctx {
        return Err(Error::Invalid(format!(
            "perplexity needs at least 2 × ctx = {} tokens; the text has {} (use a smaller \
             --ctx-size or a longer text)",
            2 * ctx,
            tokens.len()
        )));
    }
    let chunks = (tokens.len() / ctx).min(options.max_chunks.unwrap_or(usize::MAX)).max(1);
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    for c in 0..chunks {
        let window = &tokens[c * ctx..(c + 1) * ctx];
        let logits = window_logits(session, window, options, first)?;
        let vocab = logits.len() / (ctx - first);
        let values = scored_log_probs(session, &logits, vocab, &window[first + 1..]);
        for v in values {
            nll -= v;
            nll2 += v * v;
        }
        count += ctx - 1 - first;
        let ppl = (nll / count as f64).exp();
        let scored = &logits[..(ctx - 1 - first) * vocab];
        progress(Progress { chunk: c + 1, chunks, ppl, logits: scored });
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let error = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
    Ok(Estimate { ppl, error, scored: count, chunks })
}

/// `log p(targets[i])` under logits row `i`, the rows shared among the session's threads.
fn scored_log_probs(session: &Session, logits: &[f32], vocab: usize, targets: &[u32]) -> Vec<f64> {
    let mut values = vec![0f64; targets.len()];
    session.pool().for_each_chunk(&mut values, 1, |i, v| {
        v[0] = log_prob(&logits[i * vocab..(i + 1) * vocab], targets[i]);
    });
    values
}

/// The logits of positions `first..ctx` of one window (its first token replaced by
/// `options.bos`, if set).
pub fn window_logits(
    session: &mut Session,
    window: &[u32],
    options: Options,
    first: usize,
) -> Result<Vec<f32>> {
    session.reset();
    let mut input = window.to_vec();
    if let Some(bos) = options.bos {
        input[0] = bos;
    }
    let mut logits = Vec::new();
    let batch = options.batch.max(1);
    for (b, chunk) in input.chunks(batch).enumerate() {
        let start = b * batch;
        let end = start + chunk.len();
        let want =
            if end <= first { Logits::None } else { Logits::From(first.saturating_sub(start)) };
        logits.extend(session.forward(chunk, want)?);
    }
    Ok(logits)
}

/// `log softmax(logits)[token]`, with llama.cpp's precision: max in f32, the sum of
/// `exp(l − max)` in f64.
pub fn log_prob(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let l = logits.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
    f64::from(l - max) - sum.ln()
}
