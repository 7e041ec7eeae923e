//! The nearest known name to a mistyped one, for "did you mean" hints in config and
//! template errors.

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        // Optimal string alignment: a swap of neighbours, the commonest typo, is one edit.
        .map(|c| (strsim::osa_distance(name, c), *c))
        .filter(|(d, c)| *d <= c.len().max(name.len()).div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
