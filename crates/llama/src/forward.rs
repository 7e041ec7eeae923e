//! The forward pass: a session runs batches of tokens through the model's layers, each
//! layer writing its own KV cache, and returns the logits asked for.
//!
//! Rounding: weights are used as stored; activations are quantized per weight type
//! (see `kernels`); keys and values round to the cache type on store; everything else —
//! norms, RoPE, attention scores, softmax, the weighted sum of values, residuals — is f32.

use std::ops::Range;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::kernels::{Activations, Kernels, matmul};
use crate::kv::{KvCache, KvType};
use crate::model::{Layer, Matrix, Model};
use crate::ops;
use crate::pool::{self, Counter, Pool, SharedOut};
use crate::rope::{Angles, rotate};

/// Which logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (filling the cache only).
    None,
    /// The last token's.
    Last,
    /// Tokens `from..` of the batch.
    From(usize),
}

/// A model with its KV caches and the position reached.
pub struct Session<'m, 'a> {
    model: &'m Model<'a>,
    kernels: &'static Kernels,
    pool: Arc<Pool>,
    f16_products: bool,
    caches: Vec<KvCache>,
    scratch: Scratch,
    ctx: usize,
    pos: usize,
}

/// Buffers a session reuses from batch to batch: a large buffer allocated afresh for
/// every product would be new pages from the OS, zeroed on first touch.
#[derive(Default)]
struct Scratch {
    free: Vec<Vec<f32>>,
}

impl Scratch {
    /// A buffer of `len` zeros.
    fn zeroed(&mut self, len: usize) -> Vec<f32> {
        let mut v = self.free.pop().unwrap_or_default();
        v.clear();
        v.resize(len, 0.0);
        v
    }

    /// A buffer of `len` values left from earlier use, for outputs written whole.
    fn reused(&mut self, len: usize) -> Vec<f32> {
        let mut v = self.free.pop().unwrap_or_default();
        v.resize(len, 0.0);
        v
    }

    /// Takes buffers back for later batches.
    fn recycle<const N: usize>(&mut self, bufs: [Vec<f32>; N]) {
        self.free.extend(bufs);
    }
}

impl<'m, 'a> Session<'m, 'a> {
    /// A session of `ctx` positions with the fastest kernels this CPU runs, on the
    /// global pool.
    pub fn new(model: &'m Model<'a>, ctx: usize, kv: KvType) -> Session<'m, 'a> {
        let c = &model.config;
        let caches =
            model.layers.iter().map(|_| KvCache::new(kv, ctx, c.kv_dim(), c.head_dim)).collect();
        let (kernels, pool) = (Kernels::best(), pool::global());
        let scratch = Scratch::default();
        Session { model, kernels, pool, f16_products: false, caches, scratch, ctx, pos: 0 }
    }

    /// The same session with other kernels (the scalar ones, say).
    pub fn with_kernels(mut self, kernels: &'static Kernels) -> Session<'m, 'a> {
        self.kernels = kernels;
        self
    }

    /// The same session with attention's two products taking f16 operands — the query
    /// and the probabilities rounded to f16, sums in f32 — as llama.cpp's attention
    /// without flash attention multiplies an f16 cache (llama-cpp-python's default).
    pub fn with_f16_products(mut self, on: bool) -> Session<'m, 'a> {
        self.f16_products = on;
        self
    }

    /// The same session on another pool.
    pub fn with_pool(mut self, pool: Arc<Pool>) -> Session<'m, 'a> {
        self.pool = pool;
        self
    }

    /// Positions filled so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The context size.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Forgets every position.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Forgets the positions from `pos` on (the cache before it stays valid).
    pub fn rewind(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Bytes of the KV caches.
    pub fn kv_bytes(&self) -> usize {
        self.caches.iter().map(KvCache::bytes).sum()
    }

    /// The pool the session runs on.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The model.
    pub fn model(&self) -> &'m Model<'a> {
        self.model
    }

    /// Runs `tokens` at the next positions; returns the requested logits, row-major
    /// (`rows × vocab`).
    pub fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>> {
        self.forward_observed(tokens, logits, &mut |_, _| {})
    }

    /// [`Session::forward`], showing `observe` the hidden states (`tokens × hidden`,
    /// row-major) entering the first layer (`0`) and leaving each layer `i` (`i + 1`).
    pub fn forward_observed(
        &mut self,
        tokens: &[u32],
        logits: Logits,
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<Vec<f32>> {
        let c = &self.model.config;
        let n = tokens.len();
        if self.pos + n > self.ctx {
            return Err(Error::ContextFull {
                needed: self.pos + n,
                ctx: self.ctx,
                trained: c.max_positions,
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                c.vocab
            )));
        }
        let mut x = self.embed(tokens);
        observe(0, &x);
        let angles: Vec<Angles> =
            (self.pos..self.pos + n).map(|p| self.model.rope.angles(p)).collect();
        for (i, (layer, cache)) in self.model.layers.iter().zip(&mut self.caches).enumerate() {
            let step = Step {
                kernels: self.kernels,
                pool: &self.pool,
                f16_products: self.f16_products,
                model: self.model,
                pos: self.pos,
                n,
            };
            step.layer(layer, cache, &mut self.scratch, &angles, &mut x);
            observe(i + 1, &x);
        }
        self.pos += n;
        let from = match logits {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => n.saturating_sub(1),
            Logits::From(i) => i.min(n),
        };
        let h = c.hidden;
        let rows = ops::rms_norm_rows(&x[from * h..], &self.model.norm, c.rms_eps);
        Ok(self.product(&self.model.output, &rows))
    }

    fn embed(&self, tokens: &[u32]) -> Vec<f32> {
        let h = self.model.config.hidden;
        let mut x = vec![0f32; tokens.len() * h];
        for (row, &t) in x.chunks_exact_mut(h).zip(tokens) {
            self.model.embed.decode_row(t as usize, row);
            ops::scale(row, self.model.embed.scale);
        }
        x
    }

    fn product(&self, w: &Matrix, x: &[f32]) -> Vec<f32> {
        let [out] = products(&self.pool, self.kernels, &mut Scratch::default(), [w], x);
        out
    }
}

/// Products of one input with several matrices, quantizing the input once per type.
fn products<const N: usize>(
    pool: &Pool,
    kernels: &Kernels,
    scratch: &mut Scratch,
    ws: [&Matrix; N],
    x: &[f32],
) -> [Vec<f32>; N] {
    let mut act: Option<Activations> = None;
    ws.map(|w| {
        if !act.as_ref().is_some_and(|a| a.fits(w.ty) && a.cols() == w.cols) {
            act = Some(Activations::on(pool, w.ty, x, w.cols));
        }
        let a = act.as_ref().map_or(0, Activations::tokens);
        // `matmul` writes every element.
        let mut out = scratch.reused(a * w.rows);
        if let Some(a) = &act {
            matmul(pool, kernels, w, a, &mut out);
        }
        ops::scale(&mut out, w.scale);
        out
    })
}

/// Rows a piece of a batch's row operation holds.
const ROWS_PER_PIECE: usize = 8;

/// [`ops::rms_norm_rows_into`], the rows spread over the pool in pieces.
fn norm_rows(pool: &Pool, x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let width = w.len() * ROWS_PER_PIECE;
    pool.for_each_chunk(y, width, |i, y| {
        let x = x.get(i * width..i * width + y.len()).unwrap_or_default();
        ops::rms_norm_rows_into(x, w, eps, y);
    });
}

/// [`ops::silu_mul`], spread over the pool in pieces.
fn silu_mul(pool: &Pool, gate: &mut [f32], up: &[f32]) {
    const PIECE: usize = 4096;
    pool.for_each_chunk(gate, PIECE, |i, g| {
        ops::silu_mul(g, up.get(i * PIECE..i * PIECE + g.len()).unwrap_or_default());
    });
}

/// One layer's work on a batch.
struct Step<'s, 'a> {
    kernels: &'static Kernels,
    pool: &'s Pool,
    f16_products: bool,
    model: &'s Model<'a>,
    pos: usize,
    n: usize,
}

impl Step<'_, '_> {
    fn layer(
        &self,
        layer: &Layer,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        angles: &[Angles],
        x: &mut [f32],
    ) {
        let c = &self.model.config;
        let (pool, kernels) = (self.pool, self.kernels);
        let mut h = scratch.reused(x.len());
        norm_rows(pool, x, &layer.attn_norm, c.rms_eps, &mut h);
        let [mut q, mut k, mut v] =
            products(pool, kernels, scratch, [&layer.q, &layer.k, &layer.v], &h);
        for (t, b) in [(&mut q, &layer.q_bias), (&mut k, &layer.k_bias), (&mut v, &layer.v_bias)] {
            if let Some(b) = b {
                ops::add_rows(t, b);
            }
        }
        if let Some(w) = &layer.q_norm {
            ops::rms_norm_in_place(&mut q, w, c.rms_eps);
        }
        if let Some(w) = &layer.k_norm {
            ops::rms_norm_in_place(&mut k, w, c.rms_eps);
        }
        for (t, a) in angles.iter().enumerate() {
            for head in q[t * c.q_dim()..(t + 1) * c.q_dim()].chunks_exact_mut(c.head_dim) {
                rotate(head, a, layer.rope_style);
            }
            for head in k[t * c.kv_dim()..(t + 1) * c.kv_dim()].chunks_exact_mut(c.head_dim) {
                rotate(head, a, layer.rope_style);
            }
        }
        for t in 0..self.n {
            let (kd, p) = (c.kv_dim(), self.pos + t);
            cache.store(p, &k[t * kd..(t + 1) * kd], &v[t * kd..(t + 1) * kd]);
        }
        let attn = self.attention(cache, &q, layer.window, scratch.zeroed(q.len()));
        let [o] = products(pool, kernels, scratch, [&layer.o], &attn);
        ops::add(x, &o);
        norm_rows(pool, x, &layer.ffn_norm, c.rms_eps, &mut h);
        let [mut g, u] = products(pool, kernels, scratch, [&layer.gate, &layer.up], &h);
        silu_mul(pool, &mut g, &u);
        let [d] = products(pool, kernels, scratch, [&layer.down], &g);
        ops::add(x, &d);
        scratch.recycle([h, q, k, v, attn, o, g, u, d]);
    }

    /// Grouped-query attention of every query head of every token over the cache, with
    /// the causal mask and the layer's sliding window: per token and KV head, the query
    /// heads that share it are scored together.
    /// Writes into `out`, zeros as long as `q`, and returns it.
    fn attention(
        &self,
        cache: &KvCache,
        q: &[f32],
        window: Option<usize>,
        mut out: Vec<f32>,
    ) -> Vec<f32> {
        let c = &self.model.config;
        let (hd, heads, kv_heads) = (c.head_dim, c.heads, c.kv_heads);
        let group = heads / kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        // Consecutive tokens share a pass over the keys so that their query heads fill
        // the scoring panel (a key past a token's position is scored and left out).
        let per = (cache.queries_per_pass(self.kernels) / group).max(1);
        let tokens = q.len() / hd / heads;
        let items = tokens.div_ceil(per) * kv_heads;
        let ptr = SharedOut::new(&mut out);
        let counter = Counter::new();
        let keys_of = |t: usize| {
            let p = self.pos + t;
            window.map_or(0, |w| (p + 1).saturating_sub(w))..p + 1
        };
        self.pool.run(&|_| {
            let (mut scores, mut qs) = (vec![Vec::new(); group * per], Vec::new());
            while let Some(i) = counter.next(items) {
                let (b, kv_head) = (i / kv_heads, i % kv_heads);
                let these = b * per..((b + 1) * per).min(tokens);
                let all = keys_of(these.start).start..keys_of(these.end - 1).end;
                // Each token's query heads of the group are contiguous: heads `kv_head ·
                // group ..` of its row.
                let first = |t: usize| (t * heads + kv_head * group) * hd;
                qs.clear();
                for t in these.clone() {
                    qs.extend_from_slice(&q[first(t)..first(t) + group * hd]);
                }
                if self.f16_products {
                    ops::round_f16(&mut qs);
                }
                cache.scores(self.kernels, all.clone(), kv_head, &qs, &mut scores);
                // Each query's probabilities over its own keys (from `all.start`).
                let mut probs: Vec<(Range<usize>, &[f32])> = Vec::with_capacity(group * per);
                for (scores, t) in scores.chunks_mut(group).zip(these.clone()) {
                    let keys = keys_of(t);
                    let own = keys.start - all.start..keys.end - all.start;
                    for s in scores.iter_mut() {
                        let Some(s) = s.get_mut(own.clone()) else { continue };
                        (self.kernels.softmax)(s, scale);
                        if self.f16_products {
                            ops::round_f16(s);
                        }
                        probs.push((keys.clone(), s));
                    }
                }
                // SAFETY: item `i` owns the outputs of the group's heads of its tokens
                // alone: `out[first(t) + g·hd..][..hd]` for `g < group`, inside `out` (`t <
                // tokens = out.len() / hd / heads`); `run` returns when all are done.
                let mut outs: Vec<&mut [f32]> = these
                    .clone()
                    .flat_map(|t| (0..group).map(move |g| first(t) + g * hd))
                    .map(|at| unsafe { std::slice::from_raw_parts_mut(ptr.at(at), hd) })
                    .collect();
                if probs.len() == outs.len() {
                    add_values(self.kernels, cache, kv_head, &probs, &mut outs);
                }
            }
        });
        out
    }
}

/// Each output's weighted sum of its keys' values, `probs[q] = (keys, weights)`: the keys
/// all outputs share in one pass over the values, those before and after them per output
/// (each output still adds its keys in order).
fn add_values(
    kernels: &Kernels,
    cache: &KvCache,
    head: usize,
    probs: &[(Range<usize>, &[f32])],
    outs: &mut [&mut [f32]],
) {
    let start = probs.iter().map(|(k, _)| k.start).max().unwrap_or(0);
    let end = probs.iter().map(|(k, _)| k.end).min().unwrap_or(0);
    if start >= end {
        // A window narrower than the pass: no key is everyone's.
        for ((keys, w), o) in probs.iter().zip(outs.iter_mut()) {
            cache.add_values(kernels, keys.clone(), head, w, o);
        }
        return;
    }
    for ((keys, w), o) in probs.iter().zip(outs.iter_mut()) {
        let before = keys.start..start;
        cache.add_values(kernels, before.clone(), head, &w[..before.len()], o);
    }
    let shared: Vec<&[f32]> = probs
        .iter()
        .map(|(k, w)| w.get(start - k.start..end - k.start).unwrap_or_default())
        .collect();
    cache.add_values_many(kernels, start..end, head, &shared, outs);
    for ((keys, w), o) in probs.iter().zip(outs.iter_mut()) {
        cache.add_values(kernels, end..keys.end, head, &w[end - keys.start..], o);
    }
}
