//! Text generation on a session: the prompt in batches, then one token at a time through
//! the sampler until a stop token, the token budget, or the caller says stop.

use std::time::Instant;

use crate::error::Result;
use crate::forward::{Logits, Session};
use crate::sampling::Sampler;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A stop token was sampled (not printed, not fed back).
    Token(u32),
    /// `max_new_tokens` were generated.
    Length,
    /// The callback asked to stop.
    Interrupted,
}

/// Settings of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// Token ids that end the answer.
    pub stop: Vec<u32>,
    /// Keep going past stop tokens.
    pub ignore_eos: bool,
    /// Prompt tokens per forward call.
    pub batch: usize,
}

/// Counts and times of one generation.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub prompt_secs: f64,
    pub new_tokens: usize,
    pub decode_secs: f64,
    pub stop: Stop,
}

/// Feeds `tokens` at the session's next positions in batches; returns the last logits.
pub fn prefill(session: &mut Session, tokens: &[u32], batch: usize) -> Result<Vec<f32>> {
    let mut logits = Vec::new();
    let chunks: Vec<&[u32]> = tokens.chunks(batch.max(1)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let want = if i + 1 == chunks.len() { Logits::Last } else { Logits::None };
        logits = session.forward(chunk, want)?;
    }
    Ok(logits)
}

/// Generates after `prompt` (fed at the session's current position). `on_token` gets
/// each new token and returns whether to go on.
pub fn generate(
    session: &mut Session,
    sampler: &mut Sampler,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Stats> {
    let start = Instant::now();
    sampler.observe(prompt);
    let mut logits = prefill(session, prompt, options.batch)?;
    let prompt_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut new_tokens = 0;
    let stop = loop {
        if new_tokens == options.max_new_tokens {
            break Stop::Length;
        }
        if logits.is_empty() {
            break Stop::Length;
        }
        let token = sampler.sample(&logits);
        if !options.ignore_eos && options.stop.contains(&token) {
            break Stop::Token(token);
        }
        new_tokens += 1;
        if !on_token(token)? {
            break Stop::Interrupted;
        }
        if new_tokens == options.max_new_tokens {
            break Stop::Length;
        }
        logits = session.forward(&[token], Logits::Last)?;
    };
    Ok(Stats {
        prompt_tokens: prompt.len(),
        prompt_secs,
        new_tokens,
        decode_secs: start.elapsed().as_secs_f64(),
        stop,
    })
}
