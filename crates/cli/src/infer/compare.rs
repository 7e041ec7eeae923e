//! `amalgam compare`: how far a model (a merge, a quantization) is from a reference on a
//! text, with the statistics and output of `llama-perplexity --kl-divergence`.

use std::io::Write;
use std::path::PathBuf;

use amalgam_llama::Session;
use amalgam_llama::compare::{CompareOptions, Reference, compare};
use amalgam_llama::divergence::{Estimate, Tally, median, percentile};
use amalgam_llama::logits_file::{Header, LogitsReader, LogitsWriter};
use anyhow::{Result, bail};
use clap::Args;

use super::{Engine, EngineArgs, Store};

/// Compare a model with a reference on a text: perplexity of both and their ratio, the
/// correlation of their log-likelihoods, KL divergence (reference ‖ model), how often
/// the most likely token agrees, and the change in the next token's probability — what
/// `llama-perplexity --kl-divergence` prints, computed the same way.
///
/// The text is cut into windows as `amalgam perplexity` cuts it (-c, 512 by default); the
/// second half of each window is scored. Each model puts its own BOS first. The two may
/// have different layer counts (a merge against its base) but need one vocabulary.
///
/// `--save-logits FILE` keeps the reference's side so later comparisons skip its pass
/// (`--logits FILE`). The file is llama.cpp's KL-divergence base format, read and written
/// by `llama-perplexity --kl-divergence-base` too: the text's tokens, then for every
/// scored position every vocabulary entry's log-probability quantized to 16 bits over the
/// 16 nats below the most likely one — full rows, not top-k, about ctx/2 × vocabulary × 2
/// bytes per window (SmolLM2, 49152 tokens, the 14 windows of 512 in GPL-3: 351 MB).
#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// The reference model (a folder, GGUF, hub id or merge config); not needed with
    /// --logits.
    #[arg(value_name = "REFERENCE")]
    pub reference: Option<String>,

    /// The text to score (with --logits: optional, checked against the file's tokens).
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Write the reference's log-probabilities to FILE (llama.cpp's base file format).
    #[arg(long, value_name = "FILE", conflicts_with = "logits")]
    pub save_logits: Option<PathBuf>,

    /// Read the reference's log-probabilities from FILE (saved by --save-logits or by
    /// llama-perplexity --kl-divergence-base) instead of running a reference.
    #[arg(long, value_name = "FILE", conflicts_with = "reference")]
    pub logits: Option<PathBuf>,

    /// Score at most this many windows.
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
}

pub fn run(mut args: CompareArgs) -> Result<()> {
    let reader = match &args.logits {
        Some(path) => Some(LogitsReader::open(path)?),
        None => None,
    };
    if let Some(r) = &reader {
        if args.engine.ctx_size.is_some_and(|c| c != r.header.ctx) {
            bail!("--ctx-size differs from the {} of the logits file; drop it", r.header.ctx);
        }
        args.engine.ctx_size = Some(r.header.ctx);
    }
    let ctx = *args.engine.ctx_size.get_or_insert(512);
    let store = Store::open(&args.engine.model)?;
    let engine = Engine::load(&store, &args.engine)?;
    engine.announce(&store);
    let text_tokens = match &args.file {
        Some(path) => Some(store.text_tokens(path)?),
        None => None,
    };
    let chunks_in = |n: usize| (n / ctx).min(args.chunks.unwrap_or(usize::MAX));
    let mut session = Session::new(&engine.model, ctx, engine.kv);
    let bos = store.assets.tokenizer.added_prefix();
    let options = |chunks| CompareOptions { ctx, batch: engine.batch, bos, chunks };

    let tally = if let Some(mut reader) = reader {
        let tokens = reader.header.tokens.clone();
        if let Some(t) = &text_tokens
            && t.get(..tokens.len()) != Some(&tokens[..])
        {
            bail!(
                "the text's tokens are not the ones {} was made from (another text, or another \
                 tokenizer)",
                args.logits.as_deref().map_or(String::new(), |p| p.display().to_string())
            );
        }
        let chunks = chunks_in(tokens.len());
        run_with(&mut session, &tokens, Reference::File(&mut reader), None, options(chunks))?
    } else {
        let (Some(reference), Some(file), Some(tokens)) =
            (&args.reference, &args.file, &text_tokens)
        else {
            bail!("compare needs a REFERENCE model and --file TEXT, or --logits FILE");
        };
        let ref_store = Store::open(reference)?;
        let ref_args =
            EngineArgs { model: reference.clone(), rope_theta: None, ..args.engine.clone() };
        let ref_engine = Engine::load(&ref_store, &ref_args)?;
        ref_engine.announce(&ref_store);
        if ref_store.text_tokens(file)? != *tokens {
            bail!(
                "{} and {reference} tokenize the text differently; comparing needs one vocabulary",
                args.engine.model
            );
        }
        let chunks = chunks_in(tokens.len());
        let mut base = Session::new(&ref_engine.model, ctx, ref_engine.kv);
        let base_bos = ref_store.assets.tokenizer.added_prefix();
        let live = Reference::Live { session: &mut base, bos: base_bos };
        let mut save = match &args.save_logits {
            Some(path) => {
                let tokens = tokens[..chunks * ctx].to_vec();
                let vocab = ref_engine.model.config.vocab;
                Some(LogitsWriter::create(path, &Header { ctx, vocab, chunks, tokens })?)
            }
            None => None,
        };
        let tally = run_with(&mut session, tokens, live, save.as_mut(), options(chunks))?;
        if let Some(writer) = save {
            writer.finish()?;
        }
        tally
    };
    print_summary(&tally)
}

/// Runs the comparison, printing llama.cpp's table row after each window.
fn run_with(
    session: &mut Session,
    tokens: &[u32],
    reference: Reference,
    save: Option<&mut LogitsWriter>,
    options: CompareOptions,
) -> Result<Tally> {
    eprintln!("{} windows of {}", options.chunks, options.ctx);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p"
    )?;
    let bar = super::perplexity::progress_bar(false, options.chunks as u64);
    let tally = compare(session, tokens, reference, save, options, |chunk, t| {
        let (ppl, ratio, kld) = (t.ppl().0, t.log_ratio(), t.kld());
        let (rms, top) = (t.dp_rms(), t.same_top());
        bar.inc(1);
        bar.suspend(|| writeln!(
            out,
            "{chunk:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
            ppl.value,
            ppl.error,
            ratio.value,
            ratio.error,
            kld.value,
            kld.error,
            100.0 * rms.value,
            100.0 * rms.error,
            100.0 * top.value,
            100.0 * top.error
        ))
        .unwrap_or(());
    })?;
    bar.finish_and_clear();
    Ok(tally)
}

/// llama.cpp's closing statistics (when at least 100 positions were scored).
fn print_summary(t: &Tally) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    if t.count() < 100 {
        writeln!(out, "({} positions scored; the statistics need at least 100)", t.count())?;
        return Ok(());
    }
    let (mut klds, mut dps) = (t.klds.clone(), t.dps.clone());
    klds.sort_by(f32::total_cmp);
    dps.sort_by(f32::total_cmp);
    let (q, base) = t.ppl();
    let (ratio, diff) = (t.log_ratio(), t.ppl_difference());
    let pm = |e: Estimate| format!("{:10.6} ± {:10.6}", e.value, e.error);
    writeln!(out, "====== Perplexity statistics ======")?;
    writeln!(out, "Mean PPL(Q)                   : {}", pm(q))?;
    writeln!(out, "Mean PPL(base)                : {}", pm(base))?;
    writeln!(out, "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * t.correlation())?;
    writeln!(out, "Mean ln(PPL(Q)/PPL(base))     : {}", pm(ratio))?;
    let exp_ratio = Estimate { value: ratio.value.exp(), error: ratio.value.exp() * ratio.error };
    writeln!(out, "Mean PPL(Q)/PPL(base)         : {}", pm(exp_ratio))?;
    writeln!(out, "Mean PPL(Q)-PPL(base)         : {}", pm(diff))?;
    writeln!(out)?;
    writeln!(out, "====== KL divergence statistics ======")?;
    writeln!(out, "Mean    KLD: {}", pm(t.kld()))?;
    let kl_rows = [("Maximum", 1.0), ("99.9%  ", 0.999), ("99.0%  ", 0.99), ("95.0%  ", 0.95)];
    for (label, f) in kl_rows.into_iter().chain([("90.0%  ", 0.9)]) {
        writeln!(out, "{label} KLD: {:10.6}", percentile(&klds, f))?;
    }
    writeln!(out, "Median  KLD: {:10.6}", median(&klds))?;
    for (label, f) in [("10.0%  ", 0.1), (" 5.0%  ", 0.05), (" 1.0%  ", 0.01), (" 0.1%  ", 0.001)] {
        writeln!(out, "{label} KLD: {:10.6}", percentile(&klds, f))?;
    }
    writeln!(out, "Minimum KLD: {:10.6}", percentile(&klds, 0.0))?;
    writeln!(out)?;
    writeln!(out, "====== Token probability statistics ======")?;
    let dp = t.dp();
    writeln!(out, "Mean    Δp: {:6.3} ± {:5.3} %", 100.0 * dp.value, 100.0 * dp.error)?;
    let upper = [("Maximum", 1.0), ("99.9%  ", 0.999), ("99.0%  ", 0.99), ("95.0%  ", 0.95)];
    for (label, f) in upper.into_iter().chain([("90.0%  ", 0.9), ("75.0%  ", 0.75)]) {
        writeln!(out, "{label} Δp: {:6.3}%", 100.0 * percentile(&dps, f))?;
    }
    writeln!(out, "Median  Δp: {:6.3}%", 100.0 * median(&dps))?;
    let lower = [("25.0%  ", 0.25), ("10.0%  ", 0.1), (" 5.0%  ", 0.05), (" 1.0%  ", 0.01)];
    for (label, f) in lower.into_iter().chain([(" 0.1%  ", 0.001), ("Minimum", 0.0)]) {
        writeln!(out, "{label} Δp: {:6.3}%", 100.0 * percentile(&dps, f))?;
    }
    let (rms, top) = (t.dp_rms(), t.same_top());
    writeln!(out, "RMS Δp    : {:6.3} ± {:5.3} %", 100.0 * rms.value, 100.0 * rms.error)?;
    writeln!(out, "Same top p: {:6.3} ± {:5.3} %", 100.0 * top.value, 100.0 * top.error)?;
    Ok(())
}
