//! Choosing the next token: repetition penalty, then temperature, top-k, top-p and min-p
//! (transformers' order), then a draw from a seeded generator; temperature 0 is greedy.
//! Nothing depends on the thread count, so a seed always gives the same text.

/// Sampling settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// 1 is off; above 1 discourages tokens already in the context.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> SamplerConfig {
        SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// xoshiro256** seeded through SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A sampler with its generator and the tokens seen so far (for the penalty).
pub struct Sampler {
    pub config: SamplerConfig,
    rng: Rng,
    seen: Vec<u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = Rng::new(config.seed);
        Sampler { config, rng, seen: Vec::new() }
    }

    /// Records context tokens for the repetition penalty.
    pub fn observe(&mut self, tokens: &[u32]) {
        self.seen.extend_from_slice(tokens);
    }

    /// Forgets the context (a new conversation).
    pub fn clear(&mut self) {
        self.seen.clear();
    }

    /// Picks the next token from `logits` and records it.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let mut logits = logits.to_vec();
        self.penalize(&mut logits);
        let token =
            if self.config.temperature <= 0.0 { argmax(&logits) } else { self.draw(&logits) };
        self.seen.push(token);
        token
    }

    fn penalize(&self, logits: &mut [f32]) {
        let p = self.config.repetition_penalty;
        if p == 1.0 {
            return;
        }
        let mut done = vec![false; logits.len()];
        for &t in &self.seen {
            let Some(l) = logits.get_mut(t as usize) else { continue };
            if !std::mem::replace(&mut done[t as usize], true) {
                *l = if *l > 0.0 { *l / p } else { *l * p };
            }
        }
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let c = &self.config;
        let mut cands: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, l / c.temperature)).collect();
        cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if c.top_k > 0 {
            cands.truncate(c.top_k);
        }
        if cands.is_empty() {
            return 0;
        }
        let probs = softmax(&cands);
        let mut keep = probs.len();
        if c.top_p < 1.0 {
            let mut cum = 0f64;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= f64::from(c.top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let floor = probs[0] * f64::from(c.min_p);
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let total: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.uniform() * total;
        for (i, p) in probs[..keep].iter().enumerate() {
            if r < *p {
                return cands[i].0;
            }
            r -= p;
        }
        cands[keep - 1].0
    }
}

/// Probabilities of candidates sorted by logit, highest first.
fn softmax(cands: &[(u32, f32)]) -> Vec<f64> {
    let max = f64::from(cands.first().map_or(0.0, |c| c.1));
    let exps: Vec<f64> = cands.iter().map(|c| (f64::from(c.1) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}
