//! How much each layer, and each span of consecutive layers, changes the hidden state:
//! 1 − the cosine similarity of a span's input and output, averaged over tokens — the
//! measure layer-pruning work uses to find layers a model barely needs, and so the ones a
//! self-merge can repeat with the least disruption.

use crate::pool::Pool;

/// Running sums of `1 − cos` between every pair of points (point 0: the embeddings,
/// point `i + 1`: the output of layer `i`).
#[derive(Clone, Debug)]
pub struct Changes {
    points: usize,
    /// `sums[i · points + j]` for `i < j`.
    sums: Vec<f64>,
    tokens: usize,
}

impl Changes {
    /// No tokens yet, for a model of `layers` layers.
    pub fn new(layers: usize) -> Changes {
        let points = layers + 1;
        Changes { points, sums: vec![0.0; points * points], tokens: 0 }
    }

    /// Layers measured.
    pub fn layers(&self) -> usize {
        self.points - 1
    }

    /// Tokens measured.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Adds a batch: `states[p]` holds the hidden states (`tokens × hidden`) at point `p`;
    /// the first `skip` tokens (a BOS whose states are outliers) are left out.
    pub fn add(&mut self, pool: &Pool, states: &[Vec<f32>], hidden: usize, skip: usize) {
        let Some(first) = states.first() else { return };
        let tokens = first.len() / hidden.max(1);
        if states.len() != self.points || tokens <= skip {
            return;
        }
        let norms: Vec<Vec<f64>> = states
            .iter()
            .map(|s| s.chunks_exact(hidden).map(|r| dot(r, r).sqrt()).collect())
            .collect();
        let points = self.points;
        pool.for_each_chunk(&mut self.sums, points, |i, row| {
            for j in i + 1..points {
                let mut sum = 0.0;
                for t in skip..tokens {
                    let (a, b) =
                        (&states[i][t * hidden..][..hidden], &states[j][t * hidden..][..hidden]);
                    let denom = norms[i][t] * norms[j][t];
                    let cos = if denom > 0.0 { dot(a, b) / denom } else { 1.0 };
                    sum += (1.0 - cos).max(0.0);
                }
                row[j] += sum;
            }
        });
        self.tokens += tokens - skip;
    }

    /// The mean change across `len` layers from layer `start` (`1 − cos` between the
    /// span's input and output).
    pub fn span(&self, start: usize, len: usize) -> f64 {
        let end = start + len;
        if len == 0 || end > self.layers() || self.tokens == 0 {
            return f64::NAN;
        }
        self.sums[start * self.points + end] / self.tokens as f64
    }

    /// The span of `len` layers that changes the hidden state least: (start, change).
    pub fn least_changing(&self, len: usize) -> Option<(usize, f64)> {
        (0..=self.layers().checked_sub(len)?)
            .map(|s| (s, self.span(s, len)))
            .filter(|(_, c)| c.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_layer_changes_nothing_and_is_found() {
        // Three layers over two tokens of width 2: layer 1 leaves the state as it is.
        let states = vec![
            vec![1.0, 0.0, 0.0, 1.0],
            vec![1.0, 1.0, 1.0, 1.0],
            vec![1.0, 1.0, 1.0, 1.0],
            vec![-1.0, 0.0, 0.0, -1.0],
        ];
        let mut c = Changes::new(3);
        c.add(&Pool::new(1), &states, 2, 0);
        assert_eq!(c.tokens(), 2);
        assert!(c.span(1, 1).abs() < 1e-12);
        let cos45 = 1.0 - std::f64::consts::FRAC_1_SQRT_2;
        assert!((c.span(0, 1) - cos45).abs() < 1e-12);
        assert!((c.span(0, 3) - 2.0).abs() < 1e-12, "opposite: 1 − (−1)");
        assert_eq!(c.least_changing(1).map(|(s, _)| s), Some(1));
        assert!(c.span(2, 2).is_nan(), "past the last layer");
    }
}
