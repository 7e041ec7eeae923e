//! The `amalgam` binary: parses the command line and hands each subcommand to its
//! module. Errors print as one paragraph and exit with status 2.

mod convert;
mod infer;
mod inspect;
mod merge;
mod mlx;
mod pretok;
mod progress;
mod quantize;
mod shared;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Make, shrink, run and judge merged large language models.
#[derive(Parser)]
#[command(name = "amalgam", version, about, long_about = None, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Merge(merge::MergeArgs),
    Quantize(quantize::QuantizeArgs),
    Convert(convert::ConvertArgs),
    Inspect(inspect::InspectArgs),
    Generate(infer::generate::GenerateArgs),
    Chat(infer::chat::ChatArgs),
    Perplexity(infer::perplexity::PerplexityArgs),
    Compare(infer::compare::CompareArgs),
    Layers(infer::layers::LayersArgs),
    Search(infer::search::SearchArgs),
}

fn main() -> ExitCode {
    if let Some(tool) = std::env::args().nth(1).as_deref().and_then(other_mergekit_tool) {
        eprintln!(
            "error: {tool} has no amalgam equivalent yet; amalgam covers mergekit-yaml \
             (`amalgam merge`)"
        );
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if let Err(error) = signals::install() {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Merge(args) => merge::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Generate(args) => infer::generate::run(args),
        Command::Chat(args) => infer::chat::run(args),
        Command::Perplexity(args) => infer::perplexity::run(args),
        Command::Compare(args) => infer::compare::run(args),
        Command::Layers(args) => infer::layers::run(args),
        Command::Search(args) => infer::search::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The mergekit tool a subcommand such as `moe` or `mergekit-extract-lora` names, for the
/// tools amalgam does not cover.
fn other_mergekit_tool(arg: &str) -> Option<&'static str> {
    let tools = ["mergekit-moe", "mergekit-multi", "mergekit-evolve", "mergekit-extract-lora"];
    let bare = arg.strip_prefix("mergekit-").unwrap_or(arg);
    let bare = if bare == "multimerge" { "multi" } else { bare };
    tools.into_iter().find(|t| t.strip_prefix("mergekit-") == Some(bare))
}

/// A closed stdout (`amalgam ... | head`) is not a failure.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
