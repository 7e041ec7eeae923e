//! `amalgam generate`: one prompt, the answer streamed to stdout as it is sampled, and a
//! summary (prompt and decode speed, peak memory) on stderr.

use std::io::Write;

use amalgam_llama::generate::{GenerateOptions, Stats, Stop, generate};
use amalgam_llama::template::Message;
use amalgam_llama::tokenizer::StreamDecoder;
use amalgam_llama::{Assets, Sampler, Session};
use anyhow::{Context, Result, bail};
use clap::Args;

use amalgam_llama::machine::peak_rss_mib;

use super::{Engine, EngineArgs, SamplingArgs, Store};

/// Generate text from a prompt with a model folder, a GGUF file or a cached hub id.
///
/// Tokens print as they come; a summary line (prompt and decode tokens/s, peak memory)
/// goes to stderr. Sampling defaults come from the model's generation_config.json
/// (greedy when it does not sample); flags override them.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// The prompt.
    #[arg(short = 'p', long)]
    pub prompt: String,

    /// Wrap the prompt in the model's chat template as a user turn.
    #[arg(long)]
    pub chat: bool,

    /// A system message (with --chat).
    #[arg(long, requires = "chat", value_name = "TEXT")]
    pub system: Option<String>,

    /// Stop after this many new tokens.
    #[arg(short = 'n', long, default_value_t = 256, value_name = "N")]
    pub max_new_tokens: usize,

    /// Keep generating past end-of-turn tokens.
    #[arg(long)]
    pub ignore_eos: bool,

    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let store = Store::open(&args.engine.model)?;
    let engine = Engine::load(&store, &args.engine)?;
    let assets = &store.assets;
    engine.announce(&store);
    let prompt = prompt_ids(assets, &args)?;
    if prompt.len() >= engine.ctx {
        bail!(
            "the prompt is {} tokens; the context holds {} (pass a larger --ctx-size)",
            prompt.len(),
            engine.ctx
        );
    }
    let config = args.sampling.config(&assets.defaults);
    let seed = config.seed;
    let mut sampler = Sampler::new(config);
    let mut session = Session::new(&engine.model, engine.ctx, engine.kv);
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        stop: assets.stop.clone(),
        ignore_eos: args.ignore_eos,
        batch: engine.batch,
    };
    let mut decoder = StreamDecoder::new(&assets.tokenizer);
    let mut out = std::io::stdout().lock();
    let stats = generate(&mut session, &mut sampler, &prompt, &options, |token| {
        let text = decoder.push(token)?;
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(io_error)?;
        Ok(true)
    })?;
    writeln!(out, "{}", decoder.finish()?).context("writing to stdout")?;
    eprintln!("{}", summary(&stats, seed));
    Ok(())
}

fn io_error(e: std::io::Error) -> amalgam_llama::Error {
    amalgam_llama::Error::Invalid(format!("writing to stdout: {e}"))
}

/// The prompt's token ids: chat-templated, or the raw text with the tokenizer's BOS.
fn prompt_ids(assets: &Assets, args: &GenerateArgs) -> Result<Vec<u32>> {
    if !args.chat {
        return Ok(assets.tokenizer.encode(&args.prompt, true)?);
    }
    let template = assets.template.as_ref().context(
        "the model has no chat template (tokenizer_config.json, chat_template.jinja or GGUF \
         tokenizer.chat_template); drop --chat to send the prompt as it is",
    )?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new("system", system));
    }
    messages.push(Message::new("user", &args.prompt));
    let text = template.render(&messages, true)?;
    Ok(assets.tokenizer.encode(&text, false)?)
}

/// The summary line: speeds, peak memory, why it stopped, the seed.
pub fn summary(stats: &Stats, seed: u64) -> String {
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let stop = match stats.stop {
        Stop::Token(_) => "end of turn",
        Stop::Length => "token limit",
        Stop::Interrupted => "interrupted",
    };
    let memory = peak_rss_mib().map_or(String::new(), |m| format!(", peak memory {m:.0} MiB"));
    format!(
        "prompt {} tokens at {:.1} t/s, generated {} tokens at {:.1} t/s{memory} (stopped: {stop}, seed {seed})",
        stats.prompt_tokens,
        rate(stats.prompt_tokens, stats.prompt_secs),
        stats.new_tokens,
        rate(stats.new_tokens, stats.decode_secs),
    )
}
