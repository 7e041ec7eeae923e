//! `amalgam chat`: a conversation through the model's chat template, answers streamed,
//! the KV cache kept across turns (only the new part of each prompt is computed).
//! Reads piped stdin too, one user turn per line.

use std::io::{BufRead, IsTerminal, Write};

use amalgam_llama::generate::{GenerateOptions, Stop, generate};
use amalgam_llama::template::Message;
use amalgam_llama::tokenizer::StreamDecoder;
use amalgam_llama::{Sampler, Session};
use anyhow::{Context, Result};
use clap::Args;

use super::{Engine, EngineArgs, SamplingArgs, Store};
use crate::signals;

/// Chat with a model: type a message and read the answer as it is written.
///
/// `/reset` starts a new conversation, `/exit` (or end of input) quits, and Ctrl-C stops
/// the answer being written. Piped input is read one user turn per line, so a chat can be
/// scripted. Sampling defaults come from the model's generation_config.json; the seed
/// model's card uses --temperature 0.7 --top-k 50 --top-p 0.95.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// A system message opening the conversation.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,

    /// The longest answer, in tokens.
    #[arg(short = 'n', long, default_value_t = 1024, value_name = "N")]
    pub max_new_tokens: usize,

    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let store = Store::open(&args.engine.model)?;
    let engine = Engine::load(&store, &args.engine)?;
    let assets = &store.assets;
    let template = assets.template.clone().context(
        "the model has no chat template (tokenizer_config.json, chat_template.jinja or GGUF \
         tokenizer.chat_template); use `amalgam generate` for plain text",
    )?;
    engine.announce(&store);
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("/reset starts over, /exit quits, Ctrl-C stops an answer.");
    }
    let mut sampler = Sampler::new(args.sampling.config(&assets.defaults));
    let mut session = Session::new(&engine.model, engine.ctx, engine.kv);
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        stop: assets.stop.clone(),
        ignore_eos: false,
        batch: engine.batch,
    };
    let opening: Vec<Message> = args.system.iter().map(|s| Message::new("system", s)).collect();
    let mut messages = opening.clone();
    // The tokens whose keys and values the session holds.
    let mut cached: Vec<u32> = Vec::new();
    let mut out = std::io::stdout();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            print!("> ");
            out.flush().context("writing to stdout")?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = opening.clone();
                cached.clear();
                session.reset();
                eprintln!("(new conversation)");
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", text));
        let prompt = template.render(&messages, true)?;
        let ids = assets.tokenizer.encode(&prompt, false)?;
        if ids.len() >= engine.ctx {
            messages.pop();
            eprintln!(
                "error: the conversation is {} tokens and the context holds {}; /reset to \
                 start over or pass a larger --ctx-size",
                ids.len(),
                engine.ctx
            );
            continue;
        }
        let common = cached.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        session.rewind(common);
        sampler.clear();
        sampler.observe(&ids[..common]);
        let mut decoder = StreamDecoder::new(&assets.tokenizer);
        let mut answer = Vec::new();
        signals::begin_answer();
        let stats = generate(&mut session, &mut sampler, &ids[common..], &options, |token| {
            answer.push(token);
            let piece = decoder.push(token)?;
            let _ = out.write_all(piece.as_bytes()).and_then(|()| out.flush());
            Ok(!signals::stopped())
        });
        signals::end_answer();
        let stats = stats?;
        writeln!(out, "{}", decoder.finish()?).context("writing to stdout")?;
        if stats.stop == Stop::Interrupted {
            eprintln!("(stopped)");
        }
        messages.push(Message::new("assistant", decoder.text()?.trim()));
        cached = ids;
        // A stop token ends the answer unfed; otherwise the last token was not fed back.
        let fed = match stats.stop {
            Stop::Token(_) => answer.len(),
            Stop::Length | Stop::Interrupted => answer.len().saturating_sub(1),
        };
        cached.extend_from_slice(&answer[..fed]);
        session.rewind(cached.len());
    }
    Ok(())
}
