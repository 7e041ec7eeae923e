//! `amalgam search`: looks for a better self-merge layout of a base model, scoring each
//! candidate as a virtual merge (one perplexity pass, nothing written).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amalgam_llama::perplexity::{Options, perplexity};
use amalgam_llama::sampling::Rng;
use amalgam_llama::{Model, Session};
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};

use super::layout::Layout;
use super::search_log::{Memo, Score};
use super::{Engine, EngineArgs, Store};

/// Search for a passthrough self-merge of BASE with --layers N layers that keeps its
/// perplexity low.
///
/// A candidate is BASE's layers in order with spans of them repeated, N layers in all:
/// each repeat runs right after the span's last layer, its o_proj and down_proj scaled by
/// a factor between --min-scale and 1 (a scale of 0 would turn a repeat into an identity,
/// so the floor keeps the search from winning by switching layers off); the original
/// layers keep their weights. Each candidate runs as a virtual merge — BASE's weights,
/// nothing written — scored by perplexity on the first --calibration windows of TEXT.
///
/// Strategy: start from the span `amalgam layers` finds least disruptive, repeated once,
/// and from seed-style stacks of 2 to 6 evenly spread, equal slices (each at scale
/// --min-scale and 1); then hill-climb: take one of the four best so far and move a
/// repeat by 1–3 layers, hand 1–3 layers from one repeat to another, split a repeat in
/// two or join two, or step a scale by 0.1; score it; keep the board. At the end the
/// --confirm best are scored on the last --held-out windows of TEXT (never used for
/// choosing) and the best of those is written to --out as mergekit YAML, its leaderboard
/// line in a comment. With --max-evals and --seed a run is reproducible; --budget stops
/// on time instead. Every score goes to a log (--log, or beside --out), so an interrupted
/// search continues with --resume, making the same choices.
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

    /// Log every score here, one JSON line each [default: --out with `.log` added].
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Continue the search in the log: logged scores are reused, not measured again.
    #[arg(long)]
    pub resume: bool,
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

/// Where candidates are measured: the base and the two parts of the text.
struct Bench<'a> {
    store: &'a Store,
    engine: &'a Engine<'a>,
    calibration: &'a [u32],
    held_out: &'a [u32],
    bar: ProgressBar,
}

impl Bench<'_> {
    /// Perplexity of `model` on `part`, the bar advancing by window when `tick` (the
    /// calibration windows are what the bar counts).
    fn ppl(&self, model: &Model, part: &[u32], tick: bool) -> Result<f64> {
        let ctx = self.engine.ctx;
        let mut session = Session::new(model, ctx, self.engine.kv);
        let bos = self.store.assets.tokenizer.added_prefix();
        let options = Options { ctx, batch: self.engine.batch, bos, max_chunks: None };
        Ok(perplexity(&mut session, part, options, |_| {
            if tick {
                self.bar.inc(1);
            }
        })?
        .ppl)
    }

    /// The layout's perplexity on the calibration or the held-out part, from `memo` when
    /// it was measured before (then `true`).
    fn score(&self, memo: &mut Memo, layout: &Layout, held_out: bool) -> Result<(Score, bool)> {
        let (name, part) =
            if held_out { ("held-out", self.held_out) } else { ("calibration", self.calibration) };
        memo.get_or_measure(&format!("{name} {}", layout.summary()), || {
            let t = Instant::now();
            let model = self.store.load_map(|_| {}, &layout.layer_map())?;
            Ok(Score {
                ppl: self.ppl(&model, part, !held_out)?,
                seconds: t.elapsed().as_secs_f64(),
            })
        })
    }

    /// A model's held-out perplexity, from `memo` when measured before.
    fn held_out(&self, memo: &mut Memo, name: &str, model: &Model) -> Result<f64> {
        let key = format!("held-out {name}");
        let measured = memo.get_or_measure(&key, || {
            let t = Instant::now();
            let ppl = self.ppl(model, self.held_out, false)?;
            Ok(Score { ppl, seconds: t.elapsed().as_secs_f64() })
        })?;
        Ok(measured.0.ppl)
    }
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
    let log = args.log.clone().or_else(|| args.out.as_deref().map(log_beside));
    let mut memo = match &log {
        Some(path) => Memo::open(path, &settings(&args, &tokens, min_scale), args.resume)?,
        None if args.resume => bail!("--resume needs the log: name it with --log (or --out)"),
        None => Memo::in_memory(),
    };
    if args.resume {
        eprintln!("resuming: {} scores from the log", memo.len());
    }
    let max_evals = args.max_evals.unwrap_or(if args.budget.is_some() { usize::MAX } else { 40 });
    let budget = args.budget.unwrap_or(Duration::MAX);
    let bench = Bench {
        store: &store,
        engine: &engine,
        calibration: &tokens[..args.calibration * ctx],
        held_out: &tokens[(windows - args.held_out) * ctx..windows * ctx],
        bar: progress_bar(max_evals, args.calibration),
    };
    let base_held = bench.held_out(&mut memo, "base", &engine.model)?;
    say(&bench.bar, format!("base: {base_layers} layers, held-out PPL {base_held:.4}"));
    for other in &args.versus {
        let other_store = Store::open(other)?;
        let model = other_store.load(|_| {})?;
        let held = bench.held_out(&mut memo, &format!("versus {other}"), &model)?;
        say(
            &bench.bar,
            format!("versus {other}: {} layers, held-out PPL {held:.4}", model.layers.len()),
        );
    }

    let mut queue = starts(&bench, base_layers, args.layers, min_scale)?;
    let started = Instant::now();
    let mut logged_seconds = 0.0;
    let mut board: Vec<Entry> = Vec::new();
    let mut rng = Rng::new(args.seed);
    let mut misses = 0;
    while board.len() < max_evals
        && started.elapsed().as_secs_f64() + logged_seconds < budget.as_secs_f64()
        && misses < 1000
    {
        let candidate = match queue.pop() {
            Some(l) => l,
            None => {
                let parent = &board[(rng.next_u64() % board.len().min(4) as u64) as usize];
                match parent.layout.mutate(&mut rng, min_scale) {
                    Some(l) => l,
                    None => {
                        misses += 1;
                        continue;
                    }
                }
            }
        };
        if board.iter().any(|e| e.layout.summary() == candidate.summary()) {
            misses += 1;
            continue;
        }
        let (score, logged) = bench.score(&mut memo, &candidate, false)?;
        if logged {
            logged_seconds += score.seconds;
            bench.bar.inc(args.calibration as u64);
        }
        let entry = Entry {
            layout: candidate,
            calibration: score.ppl,
            held_out: None,
            seconds: score.seconds,
        };
        let done = board.len() + 1;
        let best = board.first().map_or(score.ppl, |e| e.calibration.min(score.ppl));
        say(
            &bench.bar,
            format!(
                "[{done}{}, {:.0} s] calibration PPL {:9.4} (best {best:.4}){}  {}",
                if max_evals == usize::MAX { String::new() } else { format!("/{max_evals}") },
                started.elapsed().as_secs_f64() + logged_seconds,
                score.ppl,
                if logged { ", from the log" } else { "" },
                entry.layout.summary()
            ),
        );
        board.push(entry);
        board.sort_by(|a, b| a.calibration.total_cmp(&b.calibration));
    }
    bench.bar.finish_and_clear();
    if board.is_empty() {
        bail!("no layout of {} layers fits BASE's {base_layers}", args.layers);
    }
    for e in board.iter_mut().take(args.confirm.max(1)) {
        e.held_out = Some(bench.score(&mut memo, &e.layout, true)?.0.ppl);
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
        started.elapsed().as_secs_f64() + logged_seconds,
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

/// The first candidates, in the order they are scored: the least disruptive span of the
/// added length repeated once (as `amalgam layers` finds it on the calibration part),
/// then seed-style stacks of 2 to 6 slices; each at --min-scale and at 1.
fn starts(bench: &Bench, base: usize, target: usize, min_scale: f32) -> Result<Vec<Layout>> {
    let add = target - base;
    let mut starts = Vec::new();
    if add <= base {
        let tokens = bench.calibration;
        let bos = bench.store.assets.tokenizer.added_prefix();
        let changes = super::layers::measure(bench.engine, tokens, bos)?;
        if let Some((start, _)) = changes.least_changing(add) {
            starts.extend([min_scale, 1.0].map(|s| Layout::single(base, start, start + add, s)));
        }
    }
    for k in 2..=6 {
        for s in [min_scale, 1.0] {
            starts.extend(Layout::seed_style(base, target, k, s));
        }
    }
    let mut seen = std::collections::HashSet::new();
    starts.retain(|l| seen.insert(l.summary()));
    starts.reverse(); // popped from the end
    Ok(starts)
}

/// The settings a resumed search must share with the log's: those that decide scores
/// and choices.
fn settings(args: &SearchArgs, tokens: &[u32], min_scale: f32) -> Map<String, Value> {
    let mut hash = super::perplexity::Fnv::default();
    tokens.iter().for_each(|t| hash.add(&t.to_le_bytes()));
    let e = &args.engine;
    let value = json!({
        "search": "amalgam search log, version 1",
        "base": e.model,
        "layers": args.layers,
        "text_tokens": tokens.len(),
        "text_hash": format!("{:016x}", hash.0),
        "ctx": e.ctx_size,
        "batch": e.batch,
        "kv_type": format!("{:?}", e.kv_type),
        "rope_theta": e.rope_theta,
        "calibration": args.calibration,
        "held_out": args.held_out,
        "min_scale": min_scale,
        "seed": args.seed,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `best.yml` → `best.yml.log`.
fn log_beside(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

/// A bar over the calibration windows of --max-evals candidates (a spinner with the
/// elapsed time under --budget alone).
fn progress_bar(max_evals: usize, windows: usize) -> ProgressBar {
    let target = ProgressDrawTarget::stderr();
    if max_evals == usize::MAX {
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("searching {spinner} {pos} windows scored ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        return bar;
    }
    let bar = ProgressBar::with_draw_target(Some((max_evals * windows) as u64), target);
    bar.set_style(
        ProgressStyle::with_template(
            "searching {bar:30.cyan/blue} {pos}/{len} windows (ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Prints a line on stdout above the bar.
fn say(bar: &ProgressBar, line: String) {
    bar.suspend(|| println!("{line}"));
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
