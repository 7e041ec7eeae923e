//! `amalgam search`: looks for a better self-merge layout of a base model, scoring each
//! candidate as a virtual merge (one perplexity pass, nothing written).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use amalgam_llama::perplexity::{Options, perplexity};
use amalgam_llama::sampling::Rng;
use amalgam_llama::{Model, Session};
use anyhow::{Context, Result, bail};
use clap::Args;

use super::layout::Layout;
use super::{Engine, EngineArgs, Store};

/// Search for a passthrough self-merge of BASE with --layers N layers that keeps its
/// perplexity low.
///
/// A candidate is a list of slices of BASE's layers that starts at layer 0, ends at the
/// last, overlaps or touches (no layer dropped), moves forward, and adds up to N layers;
/// every slice after the first scales its o_proj and down_proj by a factor between
/// --min-scale and 1 (a scale of 0 would turn a repeat into an identity, so the floor
/// keeps the search from winning by switching layers off). Each candidate runs as a
/// virtual merge — BASE's weights, nothing written — and is scored by perplexity on the
/// first --calibration windows of TEXT.
///
/// Strategy: start from seed-style layouts (2 to 6 evenly spread, equal slices, scaled 1
/// and --min-scale), then hill-climb: take one of the four best so far, move a slice
/// boundary by 1–3 layers (another boundary compensating) or step a scale by 0.1, score
/// it, keep the board. At the end the --confirm best are scored on the last --held-out
/// windows of TEXT (never used for choosing) and the best of those is written to --out as
/// mergekit YAML, its figures in a comment. With --max-evals and --seed a run is
/// reproducible; --budget stops on time instead.
#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Layers of the merged model.
    #[arg(long, value_name = "N")]
    pub layers: usize,

    /// The text to score on.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: PathBuf,

    /// Stop after this many candidates [default: 40 when --budget is not given].
    #[arg(long, value_name = "K")]
    pub max_evals: Option<usize>,

    /// Stop after this much time (e.g. 30m, 90s, 1h).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub budget: Option<Duration>,

    /// Seeds the mutations.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,

    /// The smallest o_proj/down_proj scale tried.
    #[arg(long, default_value_t = 0.5, value_name = "X")]
    pub min_scale: f32,

    /// Windows of TEXT (from its start) candidates are scored on.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub calibration: usize,

    /// Windows of TEXT (from its end) the leaders are confirmed on.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub held_out: usize,

    /// How many leaders are confirmed on the held-out windows.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub confirm: usize,

    /// Merge configs (of the same vocabulary) to score on the held-out windows beside the
    /// leaders, e.g. a hand-made layout to beat.
    #[arg(long, value_name = "CONFIG")]
    pub versus: Vec<String>,

    /// Write the best config here (mergekit YAML).
    #[arg(long, value_name = "BEST.yml")]
    pub out: Option<PathBuf>,
}

/// `30m`, `90s`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let value: f64 =
        number.trim().parse().map_err(|_| format!("{text:?} is not a time; write e.g. 30m"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?}: the unit is s, m or h")),
    };
    Ok(Duration::from_secs_f64((value * scale).max(0.0)))
}

/// A scored candidate.
struct Entry {
    layout: Layout,
    calibration: f64,
    held_out: Option<f64>,
    seconds: f64,
}

pub fn run(mut args: SearchArgs) -> Result<()> {
    let ctx = *args.engine.ctx_size.get_or_insert(512);
    if super::store::is_config(&args.engine.model) {
        bail!("BASE must be a model (a folder, GGUF or hub id), not a merge config");
    }
    let store = Store::open(&args.engine.model)?;
    let engine = Engine::load(&store, &args.engine)?;
    engine.announce(&store);
    let base_layers = engine.model.layers.len();
    if args.layers <= base_layers {
        bail!("--layers {} is not more than BASE's {base_layers} layers", args.layers);
    }
    let min_scale = args.min_scale.clamp(0.1, 1.0);
    let tokens = store.text_tokens(&args.file)?;
    let windows = tokens.len() / ctx;
    if args.calibration < 2 || args.held_out < 2 {
        bail!("--calibration and --held-out need at least 2 windows each (perplexity's rule)");
    }
    if args.calibration + args.held_out > windows {
        bail!(
            "the text has {windows} windows of {ctx} tokens; --calibration {} and --held-out {} \
             need that many, apart",
            args.calibration,
            args.held_out
        );
    }
    let calibration = &tokens[..args.calibration * ctx];
    let held_out = &tokens[(windows - args.held_out) * ctx..windows * ctx];
    let bos = store.assets.tokenizer.added_prefix();
    let ppl = |model: &Model, part: &[u32]| -> Result<f64> {
        let mut session = Session::new(model, ctx, engine.kv);
        let options = Options { ctx, batch: engine.batch, bos, max_chunks: None };
        Ok(perplexity(&mut session, part, options, |_| {})?.ppl)
    };
    let score =
        |layout: &Layout, part: &[u32]| ppl(&store.load_map(|_| {}, &layout.layer_map())?, part);
    let base_held = ppl(&engine.model, held_out)?;
    println!("base: {base_layers} layers, held-out PPL {base_held:.4}");
    for other in &args.versus {
        let other_store = Store::open(other)?;
        let model = other_store.load(|_| {})?;
        let other_held = ppl(&model, held_out)?;
        println!("versus {other}: {} layers, held-out PPL {other_held:.4}", model.layers.len());
    }

    let max_evals = args.max_evals.unwrap_or(if args.budget.is_some() { usize::MAX } else { 40 });
    let budget = args.budget.unwrap_or(Duration::MAX);
    let started = Instant::now();
    let mut board: Vec<Entry> = Vec::new();
    let mut queue: Vec<Layout> = (2..=6)
        .flat_map(|k| [1.0, min_scale].map(|s| Layout::seed_style(base_layers, args.layers, k, s)))
        .flatten()
        .collect();
    queue.dedup();
    let mut rng = Rng::new(args.seed);
    let mut misses = 0;
    while board.len() < max_evals && started.elapsed() < budget && misses < 1000 {
        let candidate = match queue.pop() {
            Some(l) => l,
            None => {
                let top = board.len().min(4);
                let parent = &board[(rng.next_u64() % top.max(1) as u64) as usize].layout;
                match parent.mutate(&mut rng, base_layers, args.layers, min_scale) {
                    Some(l) => l,
                    None => {
                        misses += 1;
                        continue;
                    }
                }
            }
        };
        if board.iter().any(|e| e.layout == candidate) {
            misses += 1;
            continue;
        }
        let t = Instant::now();
        let ppl = score(&candidate, calibration)?;
        let entry = Entry {
            layout: candidate,
            calibration: ppl,
            held_out: None,
            seconds: t.elapsed().as_secs_f64(),
        };
        let done = board.len() + 1;
        let elapsed = started.elapsed().as_secs_f64();
        let eta = if max_evals == usize::MAX {
            budget.as_secs_f64() - elapsed
        } else {
            elapsed / done as f64 * (max_evals - done) as f64
        };
        println!(
            "[{done}{}, {elapsed:.0} s, ETA {:.0} s] calibration PPL {ppl:9.4}  {}",
            if max_evals == usize::MAX { String::new() } else { format!("/{max_evals}") },
            eta.max(0.0),
            entry.layout.summary()
        );
        board.push(entry);
        board.sort_by(|a, b| a.calibration.total_cmp(&b.calibration));
    }
    if board.is_empty() {
        bail!("no layout of {} layers fits BASE's {base_layers}", args.layers);
    }
    for e in board.iter_mut().take(args.confirm.max(1)) {
        e.held_out = Some(score(&e.layout, held_out)?);
    }
    let best = board
        .iter()
        .filter_map(|e| e.held_out.map(|h| (h, e)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, e)| e)
        .context("no leader was confirmed")?;
    print_board(&board, base_held);
    let comment = format!(
        "amalgam search: {} -> {} layers; calibration PPL {:.4} ({} windows of {ctx}), held-out PPL \
         {:.4} ({} windows; base {base_held:.4});\n{} candidates in {:.0} s, seed {}",
        base_layers,
        args.layers,
        best.calibration,
        args.calibration,
        best.held_out.unwrap_or(f64::NAN),
        args.held_out,
        board.len(),
        started.elapsed().as_secs_f64(),
        args.seed
    );
    let yaml = best.layout.yaml(&args.engine.model, &comment);
    println!("\n{yaml}");
    if let Some(path) = &args.out {
        std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The leaderboard: every candidate by calibration perplexity, the confirmed ones with
/// their held-out perplexity.
fn print_board(board: &[Entry], base_held: f64) {
    println!("\nrank  calibration  held-out (base {base_held:.4})   seconds  layout");
    for (i, e) in board.iter().enumerate().take(15) {
        let held = e.held_out.map_or(String::from("-"), |h| format!("{h:.4}"));
        println!(
            "{:4}  {:11.4}  {held:>24}   {:7.1}  {}",
            i + 1,
            e.calibration,
            e.seconds,
            e.layout.summary()
        );
    }
}
