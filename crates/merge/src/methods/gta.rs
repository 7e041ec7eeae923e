//! Generalized task arithmetic: ties, dare_ties, dare_linear, breadcrumbs,
//! breadcrumbs_ties, della and della_linear as one implementation whose sparsifier and
//! consensus are data. Task vectors `x_i - base` are sparsified, weighted, optionally
//! sign-elected (TIES), summed, normalised, scaled by lambda and added to the base.

use amalgam_tensors::DType;
use amalgam_tensors::dtype::round_to;

/// How task vectors are thinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sparsifier {
    /// Keep the `density` fraction of largest magnitudes (TIES).
    Magnitude,
    /// Keep each element with probability `density` (DARE).
    Random,
    /// Drop the `gamma` fraction of largest magnitudes, then the smallest, down to
    /// `density` (breadcrumbs).
    MagnitudeOutliers,
    /// Keep with probability rising with magnitude rank in each row (DELLA).
    DellaMagprune,
}

/// One task vector's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInput {
    pub index: usize,
    pub weight: f32,
    pub density: f32,
    pub gamma: f32,
    pub epsilon: f32,
}

/// A bound generalized-task-arithmetic merge.
#[derive(Clone, Debug, PartialEq)]
pub struct Gta {
    pub base: usize,
    pub tasks: Vec<TaskInput>,
    pub sparsifier: Option<Sparsifier>,
    /// TIES sign election by summed weighted task vectors.
    pub consensus: bool,
    pub normalize: bool,
    /// Rescale each kept task vector to its original L1 norm.
    pub rescale: bool,
    pub lambda: f32,
    /// Seed of this tensor's random stream (from `--random-seed` and the tensor name).
    pub seed: u64,
}

impl Gta {
    /// Merges whole tensors (`cols` elements per row, for DELLA's row ranks).
    ///
    /// Each torch operation's result is rounded to the `working` dtype mergekit computes
    /// in (a no-op in float32): the task vectors, the weighted task vectors, the sums
    /// over models (accumulated in f32), the normalisation, lambda and the final add.
    #[inline(always)]
    pub fn merge(&self, inputs: &[Vec<f32>], cols: usize, working: DType) -> Vec<f32> {
        let round = |x: f32| round_to(working, x);
        let base = &inputs[self.base];
        // torch.tensor(weights, dtype=...) rounds the weights to the working dtype.
        let weights: Vec<f32> = self.tasks.iter().map(|t| round(t.weight)).collect();
        let mut deltas: Vec<Vec<f32>> = Vec::with_capacity(self.tasks.len());
        for (k, task) in self.tasks.iter().enumerate() {
            let delta: Vec<f32> =
                inputs[task.index].iter().zip(base).map(|(x, b)| round(x - b)).collect();
            let mut rng =
                SplitMix64(self.seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut delta = match self.sparsifier {
                Some(s) => sparsify(&delta, task, s, cols, &mut rng),
                None => delta,
            };
            if self.rescale && self.sparsifier.is_some() {
                let original = inputs[task.index]
                    .iter()
                    .zip(base)
                    .map(|(x, b)| f64::from(round(x - b).abs()))
                    .sum::<f64>();
                rescale_l1(&mut delta, original, working);
            }
            delta.iter_mut().for_each(|d| *d = round(*d * weights[k]));
            deltas.push(delta);
        }
        let mut out = base.clone();
        for (e, o) in out.iter_mut().enumerate() {
            let (mut mixed, mut divisor) = (0f32, 0f32);
            let sign = deltas.iter().map(|d| d[e]).sum::<f32>() >= 0.0;
            for (d, weight) in deltas.iter().zip(&weights) {
                let v = d[e];
                let agrees = v != 0.0 && (v > 0.0) == sign;
                if !self.consensus || agrees {
                    mixed += v;
                    divisor += weight;
                }
            }
            let (mut mixed, divisor) = (round(mixed), round(divisor));
            let divisor = if self.consensus {
                if divisor == 0.0 { 1.0 } else { divisor }
            } else {
                let total = round(weights.iter().sum::<f32>());
                if total.abs() < 1e-8 { 1.0 } else { total }
            };
            if self.normalize {
                mixed = round(mixed / divisor);
            }
            if self.lambda != 1.0 {
                mixed = round(mixed * self.lambda);
            }
            *o = round(*o + mixed);
        }
        out
    }
}

impl Gta {
    /// Positions whose fate a magnitude cut leaves to the sort's tie-breaking: elements of
    /// some task vector whose magnitude equals the value at a cut that equal values
    /// straddle. There, mergekit's result depends on torch's (unspecified) order. For
    /// tests (the `test-support` feature).
    #[cfg(any(test, feature = "test-support"))]
    pub fn tied_positions(&self, inputs: &[Vec<f32>], working: DType) -> Vec<bool> {
        let base = &inputs[self.base];
        let mut tied = vec![false; base.len()];
        for task in &self.tasks {
            let delta: Vec<f32> = inputs[task.index]
                .iter()
                .zip(base)
                .map(|(x, b)| round_to(working, x - b))
                .collect();
            let n = delta.len();
            if task.density >= 1.0 || n == 0 {
                continue;
            }
            let mut sorted: Vec<f32> = delta.iter().map(|d| d.abs()).collect();
            sorted.sort_by(f32::total_cmp);
            // Cuts as positions in ascending order: everything at or after a cut is kept.
            let cuts = match self.sparsifier {
                Some(Sparsifier::Magnitude) => {
                    let k = ((task.density as f64 * n as f64) as usize).max(1).min(n);
                    vec![n - k]
                }
                Some(Sparsifier::MagnitudeOutliers) => {
                    let target = (task.density as f64 * n as f64) as usize;
                    let top = (task.gamma as f64 * n as f64) as usize;
                    let bottom = n.saturating_sub(target + top);
                    vec![bottom, (bottom + target).min(n)]
                }
                _ => Vec::new(),
            };
            for cut in cuts.into_iter().filter(|&c| c > 0 && c < n) {
                // A tie of zeros changes nothing: a zero delta contributes nothing kept or not.
                if sorted[cut - 1] == sorted[cut] && sorted[cut] != 0.0 {
                    let value = sorted[cut];
                    delta
                        .iter()
                        .zip(tied.iter_mut())
                        .filter(|(d, _)| d.abs() == value)
                        .for_each(|(_, t)| *t = true);
                }
            }
        }
        tied
    }
}

/// A sparsified copy of `delta`.
fn sparsify(
    delta: &[f32],
    task: &TaskInput,
    how: Sparsifier,
    cols: usize,
    rng: &mut SplitMix64,
) -> Vec<f32> {
    let n = delta.len();
    if task.density >= 1.0 {
        return delta.to_vec();
    }
    if task.density <= 0.0 && how != Sparsifier::MagnitudeOutliers {
        return vec![0.0; n];
    }
    let keep: Vec<bool> = match how {
        Sparsifier::Magnitude => {
            let k = ((task.density as f64 * n as f64) as usize).max(1);
            largest(delta, k)
        }
        Sparsifier::MagnitudeOutliers => {
            let target = (task.density as f64 * n as f64) as usize;
            let top = (task.gamma as f64 * n as f64) as usize;
            let bottom = n.saturating_sub(target + top);
            ascending_ranks(delta, bottom, (bottom + target).min(n))
        }
        Sparsifier::Random => (0..n).map(|_| rng.next_f64() < f64::from(task.density)).collect(),
        Sparsifier::DellaMagprune => della_keep(delta, task, cols, rng),
    };
    delta.iter().zip(keep).map(|(d, k)| if k { *d } else { 0.0 }).collect()
}

/// The `k` elements of largest magnitude, equal magnitudes taken in index order (as a
/// stable descending sort would), found by selection in linear time.
fn largest(delta: &[f32], k: usize) -> Vec<bool> {
    let n = delta.len();
    if k >= n {
        return vec![true; n];
    }
    let mut mags: Vec<f32> = delta.iter().map(|d| d.abs()).collect();
    let (_, cut, _) = mags.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let cut = *cut;
    let above = delta.iter().filter(|d| d.abs().total_cmp(&cut).is_gt()).count();
    let mut equal_places = k - above;
    delta
        .iter()
        .map(|d| match d.abs().total_cmp(&cut) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal if equal_places > 0 => {
                equal_places -= 1;
                true
            }
            _ => false,
        })
        .collect()
}

/// The elements whose rank in a stable ascending sort by magnitude lies in
/// `from..to`, found by selection in linear time.
fn ascending_ranks(delta: &[f32], from: usize, to: usize) -> Vec<bool> {
    let n = delta.len();
    if from >= to {
        return vec![false; n];
    }
    let mut mags: Vec<f32> = delta.iter().map(|d| d.abs()).collect();
    let low = *mags.select_nth_unstable_by(from, f32::total_cmp).1;
    let high = *mags.select_nth_unstable_by(to - 1, f32::total_cmp).1;
    // Stable ranks of the next element equal to `low` / `high`, in index order.
    let below = |v: f32| delta.iter().filter(|d| d.abs().total_cmp(&v).is_lt()).count();
    let (mut low_rank, mut high_rank) = (below(low), below(high));
    delta
        .iter()
        .map(|d| {
            let m = d.abs();
            let rank = if m.total_cmp(&low).is_eq() {
                low_rank += 1;
                low_rank - 1
            } else if m.total_cmp(&high).is_eq() {
                high_rank += 1;
                high_rank - 1
            } else if m.total_cmp(&low).is_gt() && m.total_cmp(&high).is_lt() {
                from
            } else {
                n
            };
            (from..to).contains(&rank)
        })
        .collect()
}

/// Indices in ascending order of magnitude; equal magnitudes keep index order, where
/// torch's sort leaves them in an unspecified order.
fn by_magnitude(delta: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..delta.len()).collect();
    order.sort_by(|&a, &b| delta[a].abs().total_cmp(&delta[b].abs()));
    order
}

/// DELLA: per row, keep probability `density - eps + 2 eps * rank_norm`, with ranks of
/// magnitude normalised to [0, 1] (a 1-D tensor is one row).
fn della_keep(delta: &[f32], task: &TaskInput, cols: usize, rng: &mut SplitMix64) -> Vec<bool> {
    let cols = if cols == 0 { delta.len() } else { cols };
    let mut keep = vec![false; delta.len()];
    for start in (0..delta.len()).step_by(cols.max(1)) {
        let row = &delta[start..(start + cols).min(delta.len())];
        let order = by_magnitude(row);
        let last = (row.len().max(2) - 1) as f64;
        let mut rank = vec![0usize; row.len()];
        order.iter().enumerate().for_each(|(r, &i)| rank[i] = r);
        for (i, r) in rank.iter().enumerate() {
            let norm = (*r as f64 / last).clamp(0.0, 1.0);
            let p = f64::from(task.density - task.epsilon) + norm * 2.0 * f64::from(task.epsilon);
            keep[start + i] = rng.next_f64() < p;
        }
    }
    keep
}

/// Scales `masked` so its L1 norm equals `original`, unless either is below 1e-7; the
/// norms, their ratio and the product are rounded to `working` as torch's are.
fn rescale_l1(masked: &mut [f32], original: f64, working: DType) {
    let round = |x: f32| round_to(working, x);
    let after = round(masked.iter().map(|v| f64::from(v.abs())).sum::<f64>() as f32);
    let original = round(original as f32);
    if original < 1e-7 || after < 1e-7 {
        return;
    }
    let scale = round(original / after);
    masked.iter_mut().for_each(|v| *v = round(*v * scale));
}

/// A small, fast, well-mixed generator; each tensor and model gets its own stream, so
/// results do not depend on thread count or schedule.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A tensor's stream seed from the run's seed and its name (FNV-1a).
pub fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x100_0000_01b3);
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(index: usize, weight: f32, density: f32) -> TaskInput {
        TaskInput { index, weight, density, gamma: 0.0, epsilon: 0.0 }
    }

    fn gta(sparsifier: Option<Sparsifier>, consensus: bool, tasks: Vec<TaskInput>) -> Gta {
        Gta {
            base: 0,
            tasks,
            sparsifier,
            consensus,
            normalize: consensus,
            rescale: false,
            lambda: 1.0,
            seed: 7,
        }
    }

    #[test]
    fn bf16_rounds_like_the_task_arithmetic_kernel() {
        // Without sparsifier or consensus, GTA is task arithmetic, whose bf16 kernel
        // equals mergekit bit for bit; the two must agree on bf16 inputs.
        let mut rng = SplitMix64(3);
        let mut value = || round_to(DType::BF16, (rng.next_f64() as f32 - 0.5) * 0.2);
        let inputs: Vec<Vec<f32>> = (0..3).map(|_| (0..257).map(|_| value()).collect()).collect();
        let mut merge = gta(None, false, vec![task(1, 0.3, 1.0), task(2, 0.7, 1.0)]);
        merge.lambda = 0.9;
        let ours = merge.merge(&inputs, 257, DType::BF16);
        let kernel = crate::methods::Kernel::TaskArithmetic {
            base: 0,
            weights: vec![(1, round_to(DType::BF16, 0.3)), (2, round_to(DType::BF16, 0.7))],
            divisor: None,
            lambda: Some(0.9),
        };
        let mut want = vec![0f32; 257];
        let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        kernel.apply(DType::BF16, &crate::methods::Stats::None, &views, &mut want);
        assert_eq!(ours, want);
        assert!(ours.iter().all(|v| round_to(DType::BF16, *v) == *v), "results are bf16 values");
    }

    #[test]
    fn ties_elects_the_sign_and_averages_agreeing_deltas() {
        // Deltas: a = [2, -1, 0.5], b = [1, 3, -0.5]; density 1 keeps everything.
        let inputs = vec![vec![0.0; 3], vec![2.0, -1.0, 0.5], vec![1.0, 3.0, -0.5]];
        let out =
            gta(Some(Sparsifier::Magnitude), true, vec![task(1, 1.0, 1.0), task(2, 1.0, 1.0)])
                .merge(&inputs, 3, DType::F32);
        // Element 0: both positive, mean 1.5. Element 1: sum +2, only b agrees: 3.
        // Element 2: sum 0 counts as positive, only a agrees: 0.5.
        assert_eq!(out, vec![1.5, 3.0, 0.5]);
    }

    #[test]
    fn selection_equals_a_stable_sort() {
        let mut rng = SplitMix64(7);
        for case in 0..200 {
            let n = 1 + case % 37;
            // Few distinct magnitudes, both signs: ties everywhere.
            let delta: Vec<f32> = (0..n)
                .map(|_| {
                    (rng.next_u64() % 5) as f32 * if rng.next_f64() < 0.5 { -1.0 } else { 1.0 }
                })
                .collect();
            let ascending = by_magnitude(&delta);
            let mut descending: Vec<usize> = (0..n).collect();
            descending.sort_by(|&a, &b| delta[b].abs().total_cmp(&delta[a].abs()));
            for k in 1..=n {
                let mut want = vec![false; n];
                descending[..k].iter().for_each(|&i| want[i] = true);
                assert_eq!(largest(&delta, k), want, "{delta:?} k={k}");
            }
            for from in 0..=n {
                for to in from..=n {
                    let mut want = vec![false; n];
                    ascending[from..to].iter().for_each(|&i| want[i] = true);
                    assert_eq!(ascending_ranks(&delta, from, to), want, "{delta:?} {from}..{to}");
                }
            }
        }
    }

    #[test]
    fn magnitude_keeps_the_top_fraction() {
        let t = task(1, 1.0, 0.5);
        let kept =
            sparsify(&[0.1, -4.0, 2.0, 0.3], &t, Sparsifier::Magnitude, 4, &mut SplitMix64(1));
        assert_eq!(kept, vec![0.0, -4.0, 2.0, 0.0]);
        let zero = task(1, 1.0, 0.0);
        assert_eq!(
            sparsify(&[1.0, 2.0], &zero, Sparsifier::Magnitude, 2, &mut SplitMix64(1)),
            vec![0.0, 0.0]
        );
        // Density 1 keeps everything, whatever the sparsifier.
        let all = task(1, 1.0, 1.0);
        for how in [Sparsifier::Magnitude, Sparsifier::Random, Sparsifier::MagnitudeOutliers] {
            assert_eq!(sparsify(&[1.0, -2.0], &all, how, 2, &mut SplitMix64(1)), vec![1.0, -2.0]);
        }
    }

    #[test]
    fn breadcrumbs_drops_outliers_and_the_smallest() {
        // 10 elements, density 0.5, gamma 0.1: drop the largest one and the 4 smallest.
        let delta: Vec<f32> = (1..=10).map(|v| v as f32).collect();
        let t = TaskInput { index: 1, weight: 1.0, density: 0.5, gamma: 0.1, epsilon: 0.0 };
        let kept = sparsify(&delta, &t, Sparsifier::MagnitudeOutliers, 10, &mut SplitMix64(1));
        assert_eq!(kept, vec![0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.0]);
    }

    #[test]
    fn random_streams_depend_on_seed_and_name_only() {
        assert_eq!(tensor_seed(0, "a"), tensor_seed(0, "a"));
        assert_ne!(tensor_seed(0, "a"), tensor_seed(1, "a"));
        assert_ne!(tensor_seed(0, "a"), tensor_seed(0, "b"));
        let mut r = SplitMix64(3);
        let mean: f64 = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
