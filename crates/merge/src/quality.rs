//! The hook through which the caller measures a folder merge before it is renamed into
//! place, for the model card's "Merge quality" section (this crate runs no model).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// What there is to measure: the staged output and the model it is compared with.
pub struct Measure<'a> {
    /// The complete output folder, under its staging name.
    pub staged: &'a Path,
    /// The base model's folder or GGUF (the config's `base_model`, else its first model).
    pub base: &'a Path,
    /// The base model as the config names it.
    pub base_name: &'a str,
}

/// Measures a staged merge and returns the Markdown of its card section, or why it could
/// not (which fails the merge, so no card claims a measurement that was not made).
#[derive(Clone)]
pub struct Evaluator(pub Arc<MeasureFn>);

/// The caller's measurement: the section's Markdown, or why it failed.
pub type MeasureFn = dyn Fn(&Measure) -> Result<String, String> + Send + Sync;

impl fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Evaluator")
    }
}

/// The leaderboard line `amalgam search` writes as the config's leading comment, if any:
/// its comment lines from `# amalgam search:` on, without the `# `.
pub fn search_note(config_text: &str) -> Option<String> {
    let lines: Vec<&str> = config_text
        .lines()
        .map_while(|l| l.strip_prefix('#'))
        .map(str::trim)
        .skip_while(|l| !l.starts_with("amalgam search:"))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_line_is_found_in_the_leading_comment() {
        let config = "# amalgam search: 30 -> 50 layers; held-out PPL 21.0\n# 120 candidates\nslices: []\n# amalgam search: not this\n";
        assert_eq!(
            search_note(config).as_deref(),
            Some("amalgam search: 30 -> 50 layers; held-out PPL 21.0\n120 candidates")
        );
        assert_eq!(search_note("# hand-made\nslices: []\n"), None);
    }
}
