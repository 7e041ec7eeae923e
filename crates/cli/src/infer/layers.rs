//! `amalgam layers`: how much each layer and each span of layers changes the hidden
//! state on a text, the spans a model barely needs, and a self-merge that repeats one.

use std::fmt::Write as _;
use std::path::PathBuf;

use amalgam_llama::redundancy::Changes;
use amalgam_llama::{Logits, Session};
use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Engine, EngineArgs, Store};

/// Measure how much each layer, and each span of consecutive layers, changes the hidden
/// state: 1 − the cosine similarity of the span's input and output, averaged over the
/// tokens of the text (each window's first token, an outlier, left out). Layers and spans
/// that change it least are the ones a model barely needs — and the ones a passthrough
/// self-merge can repeat with the least disruption. Prints a table per layer, the spans
/// by start and length, the least-changing span of each length, and a passthrough config
/// that repeats the least-changing span of --add layers. With --out PREFIX, the span
/// table is drawn as a heat map (PREFIX.svg, PREFIX.png) and the config written to
/// PREFIX.yml.
#[derive(Args, Debug)]
pub struct LayersArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// The text to run.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: PathBuf,

    /// Run at most this many windows of --ctx-size tokens (512 by default).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub chunks: usize,

    /// The longest span to tabulate.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_span: usize,

    /// Layers the suggested self-merge adds [default: a third of the model's].
    #[arg(long, value_name = "N")]
    pub add: Option<usize>,

    /// Draw the heat map to PREFIX.svg and PREFIX.png, and write the suggested config to
    /// PREFIX.yml.
    #[arg(long, value_name = "PREFIX")]
    pub out: Option<PathBuf>,
}

pub fn run(mut args: LayersArgs) -> Result<()> {
    let ctx = *args.engine.ctx_size.get_or_insert(512);
    let store = Store::open(&args.engine.model)?;
    let engine = Engine::load(&store, &args.engine)?;
    engine.announce(&store);
    let tokens = store.text_tokens(&args.file)?;
    let windows = (tokens.len() / ctx).min(args.chunks);
    if windows == 0 {
        bail!("the text has {} tokens, less than one window of {ctx}", tokens.len());
    }
    let changes =
        measure(&engine, &tokens[..windows * ctx], store.assets.tokenizer.added_prefix())?;
    let layers = changes.layers();
    eprintln!("{} tokens in {windows} windows of {ctx}", changes.tokens());
    let max_span = args.max_span.clamp(1, layers);
    print!("{}", tables(&changes, max_span));
    if let Some(prefix) = &args.out {
        let name = std::path::Path::new(&args.engine.model).file_name();
        let name = name.map_or(args.engine.model.clone(), |n| n.to_string_lossy().into_owned());
        let title = format!("{name}: change across spans (outlined: least per length)");

        for path in super::heatmap::draw(&changes, max_span, &title, prefix)? {
            eprintln!("wrote {}", path.display());
        }
    }
    if super::store::is_config(&args.engine.model) {
        eprintln!(
            "note: no config is suggested for a merge config (a slice cannot name one); write \
             it with `amalgam merge` and measure the output"
        );
        return Ok(());
    }
    let add = args.add.unwrap_or(layers / 3).clamp(1, layers);
    let (start, change) = changes.least_changing(add).context("no span to repeat")?;
    let config = suggestion(&args.engine.model, layers, start, add, change);
    println!("\n{config}");
    if let Some(prefix) = &args.out {
        let path = prefix.with_extension("yml");
        std::fs::write(&path, &config).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs every window of `tokens` (BOS first when the model adds one), measuring.
pub(super) fn measure(engine: &Engine, tokens: &[u32], bos: Option<u32>) -> Result<Changes> {
    let (ctx, hidden) = (engine.ctx, engine.model.config.hidden);
    let mut session = Session::new(&engine.model, ctx, engine.kv);
    let mut changes = Changes::new(engine.model.layers.len());
    let points = engine.model.layers.len() + 1;
    let bar = super::perplexity::progress_bar(false, (tokens.len() / ctx) as u64);
    for window in tokens.chunks_exact(ctx) {
        session.reset();
        let mut input = window.to_vec();
        if let (Some(bos), Some(first)) = (bos, input.first_mut()) {
            *first = bos;
        }
        for (b, batch) in input.chunks(engine.batch).enumerate() {
            let mut states: Vec<Vec<f32>> = vec![Vec::new(); points];
            session.forward_observed(batch, Logits::None, &mut |p, x| {
                if let Some(s) = states.get_mut(p) {
                    s.extend_from_slice(x);
                }
            })?;
            changes.add(session.pool(), &states, hidden, usize::from(b == 0));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(changes)
}

/// The per-layer table, the span table and the least-changing span of each length.
fn tables(c: &Changes, max_span: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "layer   change (1 − cos of its input and output)");
    for l in 0..c.layers() {
        let _ = writeln!(out, "{l:5}   {:.5}", c.span(l, 1));
    }
    let _ = writeln!(out, "\nspans: change across LEN layers from START");
    let _ = write!(out, "start");
    for len in 1..=max_span {
        let _ = write!(out, " {len:>7}");
    }
    for start in 0..c.layers() {
        let _ = write!(out, "\n{start:5}");
        for len in 1..=max_span {
            let v = c.span(start, len);
            let _ = if v.is_finite() { write!(out, " {v:7.4}") } else { write!(out, " {:>7}", "") };
        }
    }
    let _ = writeln!(out, "\n\nleast-changing span of each length (the most redundant):");
    for len in 1..=max_span {
        if let Some((s, v)) = c.least_changing(len) {
            let _ = writeln!(out, "  {len:2} layers: {s}..{} ({v:.5})", s + len);
        }
    }
    out
}

/// A passthrough config that repeats layers `start..start + len` of `model` once.
fn suggestion(model: &str, layers: usize, start: usize, len: usize, change: f64) -> String {
    let quoted = serde_json::to_string(model).unwrap_or_default();
    format!(
        "# amalgam layers: layers {start}..{end} of {model} change the hidden state least of \
         any {len} in a row ({change:.5});\n# this repeats them once: {layers} -> {total} layers.\n\
         slices:\n- sources: [{{model: {quoted}, layer_range: [0, {end}]}}]\n\
         - sources: [{{model: {quoted}, layer_range: [{start}, {layers}]}}]\n\
         merge_method: passthrough\n",
        end = start + len,
        total = layers + len,
    )
}
