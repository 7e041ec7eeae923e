//! `amalgam merge --eval-file`: the model card's "Merge quality" section, from the
//! perplexity of the staged merge and of its base on a text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use amalgam_llama::Session;
use amalgam_llama::perplexity::{Options, perplexity};
use amalgam_merge::quality::{Evaluator, Measure};
use anyhow::{Context, Result};
use indicatif::ProgressBar;

use super::{Engine, EngineArgs, KvTypeArg, Store};

/// The windows scored: 512 tokens, or the model's context when shorter.
const CTX: usize = 512;

/// The hook `amalgam merge` calls on the staged output; `merge_bar` is cleared first.
pub fn evaluator(text: PathBuf, chunks: Option<usize>, merge_bar: ProgressBar) -> Evaluator {
    Evaluator(Arc::new(move |m: &Measure| {
        merge_bar.finish_and_clear();
        section(&text, chunks, m).map_err(|e| format!("{e:#}"))
    }))
}

/// A model's figures on the text.
struct Measured {
    layers: usize,
    ppl: f64,
    error: f64,
    tokens: usize,
    windows: usize,
    ctx: usize,
}

/// The section's Markdown: a table of both models, the ratio, and how it was measured.
fn section(text: &Path, chunks: Option<usize>, m: &Measure) -> Result<String> {
    let merged = measure(m.staged, "the merge", text, chunks)?;
    let base = measure(m.base, m.base_name, text, chunks)?;
    let name = text.file_name().map_or(text.display().to_string(), |n| n.display().to_string());
    let mut out = format!(
        "Perplexity on `{name}` ({} windows of {} tokens, the second half of each scored, as \
         `amalgam perplexity` and llama.cpp's `llama-perplexity` measure it; lower is better):\n\n\
         | model | layers | perplexity |\n|---|---|---|\n\
         | this merge | {} | {:.4} ± {:.4} |\n| {} (base) | {} | {:.4} ± {:.4} |\n\n\
         The merge's perplexity is {:.3}× its base's.",
        merged.windows,
        merged.ctx,
        merged.layers,
        merged.ppl,
        merged.error,
        m.base_name,
        base.layers,
        base.ppl,
        base.error,
        merged.ppl / base.ppl
    );
    if merged.tokens != base.tokens || merged.ctx != base.ctx {
        out += &format!(
            " The two tokenize or window the text differently ({} and {} tokens, windows of {} \
             and {}), so each figure is per its own tokens.",
            merged.tokens, base.tokens, merged.ctx, base.ctx
        );
    }
    Ok(out)
}

/// Perplexity of the model at `path` on `text`, with a bar.
fn measure(path: &Path, label: &str, text: &Path, chunks: Option<usize>) -> Result<Measured> {
    let store = Store::open_model(path)?;
    let args = EngineArgs {
        model: path.display().to_string(),
        ctx_size: Some(CTX),
        threads: None,
        kv_type: KvTypeArg::F16,
        rope_theta: None,
        batch: CTX,
    };
    let mut engine = Engine::load(&store, &args)?;
    engine.ctx = engine.ctx.min(engine.model.config.max_positions.max(1));
    let tokens = store.text_tokens(text)?;
    let windows = (tokens.len() / engine.ctx).min(chunks.unwrap_or(usize::MAX));
    eprintln!("measuring {label} on {}: {windows} windows of {}", text.display(), engine.ctx);
    let bar = super::perplexity::progress_bar(false, windows as u64);
    let mut session = Session::new(&engine.model, engine.ctx, engine.kv);
    let bos = store.assets.tokenizer.added_prefix();
    let options = Options { ctx: engine.ctx, batch: engine.batch, bos, max_chunks: chunks };
    let estimate = perplexity(&mut session, &tokens, options, |_| bar.inc(1))
        .with_context(|| format!("measuring {label}"))?;
    bar.finish_and_clear();
    Ok(Measured {
        layers: engine.model.layers.len(),
        ppl: estimate.ppl,
        error: estimate.error,
        tokens: tokens.len(),
        windows: estimate.chunks,
        ctx: engine.ctx,
    })
}
