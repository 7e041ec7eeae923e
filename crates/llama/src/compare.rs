//! A model scored against a reference window by window, as `llama-perplexity
//! --kl-divergence` does: the reference's rows come from a live session or from a saved
//! base file, and may be saved on the way.

use crate::divergence::{Tally, TokenScore, score};
use crate::error::{Error, Result};
use crate::forward::Session;
use crate::logits_file::{LogitsReader, LogitsWriter, quantize_row, record_len};
use crate::perplexity::{Options, window_logits};

/// Where the reference's log-probabilities come from.
pub enum Reference<'r, 'm, 'a> {
    /// A model run alongside, with its own BOS rule.
    Live { session: &'r mut Session<'m, 'a>, bos: Option<u32> },
    /// A saved base file.
    File(&'r mut LogitsReader),
}

/// Settings of a comparison.
#[derive(Clone, Copy, Debug)]
pub struct CompareOptions {
    pub ctx: usize,
    pub batch: usize,
    /// The BOS id the compared model puts first in each window, if it adds one.
    pub bos: Option<u32>,
    pub chunks: usize,
}

/// Scores `session`'s model on `tokens` (`chunks · ctx` of them) against `reference`,
/// writing the reference's records to `save` when given; `progress` sees the tally after
/// each window.
pub fn compare(
    session: &mut Session,
    tokens: &[u32],
    mut reference: Reference<'_, '_, '_>,
    mut save: Option<&mut LogitsWriter>,
    options: CompareOptions,
    mut progress: impl FnMut(usize, &Tally),
) -> Result<Tally> {
    let (ctx, vocab) = (options.ctx, session.model().config.vocab);
    if ctx < 4 || tokens.len() < options.chunks * ctx || options.chunks == 0 {
        return Err(Error::Invalid(format!(
            "comparing needs at least one window of {ctx} tokens; the text has {}",
            tokens.len()
        )));
    }
    let first = ctx / 2;
    let scored = ctx - 1 - first;
    let mut records = vec![0u16; scored * record_len(vocab)];
    let mut tally = Tally::default();
    for c in 0..options.chunks {
        let window = &tokens[c * ctx..(c + 1) * ctx];
        match &mut reference {
            Reference::Live { session: base, bos } => {
                let options = Options { ctx, batch: options.batch, bos: *bos, max_chunks: None };
                let logits = window_logits(base, window, options, first)?;
                check_vocab(logits.len(), ctx - first, vocab)?;
                base.pool().for_each_chunk(&mut records, record_len(vocab), |i, r| {
                    quantize_row(&logits[i * vocab..(i + 1) * vocab], r);
                });
            }
            Reference::File(reader) => {
                if reader.header.vocab != vocab {
                    return Err(vocab_error(reader.header.vocab, vocab));
                }
                reader.read_chunk(&mut records)?;
            }
        }
        if let Some(w) = save.as_deref_mut() {
            w.write(&records)?;
        }
        let options = Options { ctx, batch: options.batch, bos: options.bos, max_chunks: None };
        let logits = window_logits(session, window, options, first)?;
        let targets = &window[first + 1..];
        let blank = TokenScore { nll: 0.0, nll_base: 0.0, kld: 0.0, same_top: false, dp: 0.0 };
        let mut scores = vec![blank; scored];
        let rl = record_len(vocab);
        session.pool().for_each_chunk(&mut scores, 1, |i, s| {
            let row = &logits[i * vocab..(i + 1) * vocab];
            s[0] = score(row, &records[i * rl..(i + 1) * rl], targets[i]);
        });
        scores.into_iter().for_each(|s| tally.add(s));
        progress(c + 1, &tally);
    }
    Ok(tally)
}

/// Checks the reference's `rows` rows of logits are `vocab` wide.
fn check_vocab(logits: usize, rows: usize, vocab: usize) -> Result<()> {
    let reference = logits / rows.max(1);
    if reference != vocab { Err(vocab_error(reference, vocab)) } else { Ok(()) }
}

fn vocab_error(reference: usize, model: usize) -> Error {
    Error::Invalid(format!(
        "the reference has a vocabulary of {reference} tokens and the model {model}; \
         comparing needs one vocabulary"
    ))
}
