//! How far a model's predictions are from a reference's, token by token, with the
//! statistics `llama-perplexity --kl-divergence` prints: both perplexities and their
//! ratio, the correlation of their log-likelihoods, KL(reference ‖ model), how often the
//! most likely token agrees, and the change in the probability of the actual next token.
//! The reference comes as quantized records (`logits_file`), as in llama.cpp.

use crate::logits_file::split_record;

/// One scored position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    /// Negative log-likelihood of the next token under the model and the reference.
    pub nll: f32,
    pub nll_base: f32,
    /// KL(reference ‖ model) over the reference's top 16 nats.
    pub kld: f64,
    /// Whether the model's most likely token is the reference's.
    pub same_top: bool,
    /// p(token) under the model minus under the reference.
    pub dp: f32,
}

/// Scores the model's `logits` at one position against the reference `record`, the next
/// token being `token` (llama.cpp's precision: f32 log-softmax with an f64 sum of
/// exponentials, the KL sum in f64).
pub fn score(logits: &[f32], record: &[u16], token: u32) -> TokenScore {
    let (mut max, mut top) = (f32::NEG_INFINITY, 0);
    for (i, &l) in logits.iter().enumerate() {
        if l > max {
            (max, top) = (l, i);
        }
    }
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let (scale, min_log_prob, q) = split_record(record);
    let at = |v: &[f32], i: usize| v.get(i).copied().unwrap_or(f32::NEG_INFINITY);
    let token = token as usize;
    let nll = max + log_sum_exp - at(logits, token);
    let nll_base = -(scale * f32::from(q.get(token).copied().unwrap_or(0)) + min_log_prob);
    let shift = max + log_sum_exp;
    let (mut kld, mut base_top, mut base_max) = (0f64, 0, f32::NEG_INFINITY);
    for (i, (&qi, &l)) in q.iter().zip(logits).enumerate() {
        let lp = scale * f32::from(qi) + min_log_prob;
        if i == 0 || lp > base_max {
            (base_max, base_top) = (lp, i);
        }
        if lp > -crate::logits_file::RANGE {
            kld += f64::from(lp.exp() * (lp - l + shift));
        }
    }
    let dp = (-nll).exp() - (-nll_base).exp();
    TokenScore { nll, nll_base, kld, same_top: top == base_top, dp }
}

/// Running sums over scored positions, and every position's KL and Δp for percentiles.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    nll: f64,
    nll2: f64,
    nll_base: f64,
    nll_base2: f64,
    nll_nll_base: f64,
    kld: f64,
    kld2: f64,
    dp: f64,
    dp2: f64,
    dp4: f64,
    same_top: usize,
    pub klds: Vec<f32>,
    pub dps: Vec<f32>,
}

/// A mean and its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub error: f64,
}

impl Tally {
    /// Adds one position.
    pub fn add(&mut self, s: TokenScore) {
        let (nll, nll_base) = (f64::from(s.nll), f64::from(s.nll_base));
        self.nll += nll;
        self.nll2 += nll * nll;
        self.nll_base += nll_base;
        self.nll_base2 += nll_base * nll_base;
        self.nll_nll_base += nll * nll_base;
        self.kld += s.kld;
        self.kld2 += s.kld * s.kld;
        let dp = f64::from(s.dp);
        self.dp += dp;
        self.dp2 += dp * dp;
        self.dp4 += dp * dp * dp * dp;
        self.same_top += usize::from(s.same_top);
        self.klds.push(s.kld as f32);
        self.dps.push(s.dp);
    }

    /// Positions scored.
    pub fn count(&self) -> usize {
        self.klds.len()
    }

    fn mean(&self, sum: f64, sum2: f64) -> Estimate {
        let n = self.count() as f64;
        let value = sum / n;
        let var = sum2 / n - value * value;
        let error = if var > 0.0 && self.count() > 10 { (var / (n - 1.0)).sqrt() } else { 0.0 };
        Estimate { value, error }
    }

    fn covariance(&self) -> f64 {
        let n = self.count() as f64;
        if self.count() < 10 {
            return 0.0;
        }
        (self.nll_nll_base / n - (self.nll / n) * (self.nll_base / n)) / (n - 1.0)
    }

    /// Mean negative log-likelihood of the model, and of the reference.
    pub fn log_ppl(&self) -> (Estimate, Estimate) {
        (self.mean(self.nll, self.nll2), self.mean(self.nll_base, self.nll_base2))
    }

    /// Perplexity of the model and of the reference.
    pub fn ppl(&self) -> (Estimate, Estimate) {
        let (q, b) = self.log_ppl();
        let exp = |e: Estimate| Estimate { value: e.value.exp(), error: e.value.exp() * e.error };
        (exp(q), exp(b))
    }

    /// The correlation of the two models' log-likelihoods.
    pub fn correlation(&self) -> f64 {
        let (q, b) = self.log_ppl();
        self.covariance() / (q.error * b.error)
    }

    /// `ln(PPL(model) / PPL(reference))`.
    pub fn log_ratio(&self) -> Estimate {
        let (q, b) = self.log_ppl();
        let var = q.error * q.error + b.error * b.error - 2.0 * self.covariance();
        Estimate { value: q.value - b.value, error: var.max(0.0).sqrt() }
    }

    /// `PPL(model) − PPL(reference)`.
    pub fn ppl_difference(&self) -> Estimate {
        let (q, b) = self.ppl();
        let cov = q.value * b.value * self.covariance();
        let var = q.error * q.error + b.error * b.error - 2.0 * cov;
        Estimate { value: q.value - b.value, error: var.max(0.0).sqrt() }
    }

    /// Mean KL divergence.
    pub fn kld(&self) -> Estimate {
        self.mean(self.kld, self.kld2)
    }

    /// Mean Δp.
    pub fn dp(&self) -> Estimate {
        self.mean(self.dp, self.dp2)
    }

    /// Root mean square Δp.
    pub fn dp_rms(&self) -> Estimate {
        let mse = self.mean(self.dp2, self.dp4);
        let value = mse.value.sqrt();
        Estimate { value, error: if value > 0.0 { 0.5 / value * mse.error } else { 0.0 } }
    }

    /// The share of positions whose most likely token is the reference's.
    pub fn same_top(&self) -> Estimate {
        let n = self.count() as f64;
        let p = self.same_top as f64 / n;
        let error = if self.count() > 1 { (p * (1.0 - p) / (n - 1.0)).sqrt() } else { 0.0 };
        Estimate { value: p, error }
    }
}

/// The value at `fraction` of `sorted` (ascending), interpolated between neighbours.
pub fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else { return f32::NAN };
    if fraction <= 0.0 {
        return first;
    }
    if fraction >= 1.0 {
        return last;
    }
    let p = fraction * (sorted.len() - 1) as f32;
    let i = p as usize;
    let frac = p - i as f32;
    let next = sorted.get(i + 1).copied().unwrap_or(last);
    (1.0 - frac) * sorted.get(i).copied().unwrap_or(last) + frac * next
}

/// The middle value of `sorted`, or the mean of the middle two.
pub fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    match (sorted.get(n / 2), n.checked_sub(1).and_then(|m| sorted.get(m / 2))) {
        (Some(&hi), Some(&lo)) if n.is_multiple_of(2) => 0.5 * (hi + lo),
        (Some(&mid), _) => mid,
        _ => f32::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logits_file::{quantize_row, record_len};

    fn record(logits: &[f32]) -> Vec<u16> {
        let mut r = vec![0u16; record_len(logits.len())];
        quantize_row(logits, &mut r);
        r
    }

    #[test]
    fn a_model_against_its_own_record_has_no_divergence() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7 % 13) as f32).ln_1p() * 3.0).collect();
        let r = record(&logits);
        let s = score(&logits, &r, 5);
        // Each stored log-probability is within half a step of the exact one, so the
        // divergence is within half a step (the probabilities sum to about 1).
        let half_step = f64::from(split_record(&r).0) / 2.0;
        assert!(s.kld.abs() <= half_step * 1.01, "{} > {half_step}", s.kld);
        assert!(s.same_top && (s.nll - s.nll_base).abs() < 1e-3 && s.dp.abs() < 1e-3, "{s:?}");
    }

    #[test]
    fn kl_matches_its_definition_for_a_different_model() {
        let base: Vec<f32> = vec![2.0, 1.0, 0.0, -1.0];
        let model: Vec<f32> = vec![0.0, 2.0, 0.0, -1.0];
        let s = score(&model, &record(&base), 0);
        let soft = |l: &[f32]| {
            let z: f64 = l.iter().map(|&x| f64::from(x).exp()).sum();
            l.iter().map(|&x| f64::from(x).exp() / z).collect::<Vec<_>>()
        };
        let (p, q) = (soft(&base), soft(&model));
        let want: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        assert!((s.kld - want).abs() < 1e-3, "{} vs {want}", s.kld);
        assert!(!s.same_top);
        assert!((f64::from(s.dp) - (q[0] - p[0])).abs() < 1e-3);
    }

    #[test]
    fn percentiles_interpolate_and_medians_average() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(median(&v), 2.5);
        assert_eq!(median(&v[..3]), 2.0);
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert!((percentile(&v, 0.9) - 3.7).abs() < 1e-6);
    }
}
