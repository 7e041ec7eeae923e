//! The binary's one Ctrl-C / SIGTERM handler: while `chat` writes an answer it stops the
//! answer; otherwise it removes the partial outputs this process is writing, says so,
//! and exits with status 130, so an interrupted merge or quantization leaves nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use amalgam_tensors::partial::Left;
use anyhow::Context;

/// Whether an interrupt stops an answer instead of the program.
static STOPS_ANSWER: AtomicBool = AtomicBool::new(false);
/// Set by an interrupt while [`STOPS_ANSWER`] is.
static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once, at start).
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(on_interrupt).context("installing the Ctrl-C handler")
}

fn on_interrupt() {
    if STOPS_ANSWER.load(Ordering::SeqCst) {
        STOP.store(true, Ordering::SeqCst);
        return;
    }
    for left in amalgam_tensors::partial::remove_unfinished() {
        match left {
            Left::Removed(path) => {
                eprintln!("\ninterrupted: removed the unfinished {}", path.display());
            }
            Left::Kept { path, done } => eprintln!(
                "\ninterrupted: kept the unfinished merge in {} ({done} tensors written); the \
                 same command with --resume finishes it, and without it removes it",
                path.display()
            ),
        }
    }
    std::process::exit(130);
}

/// From now until [`end_answer`], an interrupt stops the answer (see [`stopped`]).
pub fn begin_answer() {
    STOP.store(false, Ordering::SeqCst);
    STOPS_ANSWER.store(true, Ordering::SeqCst);
}

/// Interrupts quit again.
pub fn end_answer() {
    STOPS_ANSWER.store(false, Ordering::SeqCst);
}

/// Whether an interrupt asked the current answer to stop.
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Removes the partial outputs that amalgam processes no longer running left beside
/// `out`, with a note for each.
pub fn remove_stale_partials(out: &std::path::Path) {
    for stale in amalgam_tensors::partial::stale(out) {
        if stale.resumable().is_some_and(|done| done > 0) && !stale.is_for(out) {
            continue; // another output's interrupted merge, which its own --resume can finish
        }
        let resumable = stale.resumable().filter(|done| *done > 0).map(|done| {
            format!(" (it had {done} tensors written: --resume would have finished it)")
        });
        if amalgam_tensors::partial::remove_one(&stale) {
            eprintln!("note: removed {stale}{}", resumable.unwrap_or_default());
        }
    }
}
