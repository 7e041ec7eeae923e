//! Terminal progress for long work: a byte-counting bar with the tensor count and ETA,
//! drawn only on a terminal, with warnings printed above it.

use std::sync::atomic::{AtomicUsize, Ordering};

use amalgam_merge::Reporter;
use amalgam_merge::execute::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports a merge on stderr.
pub struct Bar {
    bar: ProgressBar,
    tensors: AtomicUsize,
    total_tensors: AtomicUsize,
}

impl Bar {
    /// A bar on stderr; hidden with `quiet` (warnings still print).
    pub fn new(quiet: bool) -> Bar {
        let target =
            if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let bar = ProgressBar::with_draw_target(None, target);
        Bar { bar, tensors: AtomicUsize::new(0), total_tensors: AtomicUsize::new(0) }
    }

    /// The bar itself, for work that clears it before drawing its own.
    pub fn handle(&self) -> ProgressBar {
        self.bar.clone()
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Starts counting `total` bytes of work under `label`.
    pub fn start_bytes(&self, label: &str, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(0);
        let template = format!(
            "{label} {{bar:30.cyan/blue}} {{bytes}}/{{total_bytes}} ({{binary_bytes_per_sec}}, ETA {{eta}})"
        );
        self.bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }

    /// Counts `bytes` more as done.
    pub fn add(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// Prints a warning above the bar.
    pub fn warn_line(&self, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
}

impl Progress for Bar {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn tensor_done(&self) {
        let done = self.tensors.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total_tensors.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{total} tensors"));
    }
}

impl Reporter for Bar {
    fn warn(&self, message: &str) {
        self.warn_line(message);
    }

    fn begin(&self, tensors: usize, bytes: u64) {
        self.total_tensors.store(tensors, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.set_position(0);
        self.bar.set_style(
            ProgressStyle::with_template(
                "merging {bar:30.cyan/blue} {bytes}/{total_bytes} {msg} ({binary_bytes_per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.bar.set_message(format!("0/{tensors} tensors"));
    }

    fn download(&self, file: &str, done: u64, total: Option<u64>) {
        if let Some(total) = total {
            self.bar.set_length(total);
        }
        self.bar.set_style(
            ProgressStyle::with_template(
                "downloading {msg} {bytes}/{total_bytes} ({binary_bytes_per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.bar.set_message(file.to_owned());
        self.bar.set_position(done);
    }
}
