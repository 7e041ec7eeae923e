//! f32 activations put in the form a weight type's dot product takes: kept as f32 for
//! float weights, or quantized per 32 (Q8_0, Q8_1) or 256 (Q8_K) elements exactly as
//! llama.cpp's x86 CPU backend quantizes them.

use std::sync::OnceLock;

use amalgam_gguf::GgmlType;
use amalgam_gguf::blocks::{BlockQ8_0, BlockQ8_1, BlockQ8K, QK, as_blocks, as_blocks_mut};
use amalgam_gguf::quant;

use super::token_lanes::TokenLanes;
use super::{PANEL, activation_type};
use crate::pool::Pool;

/// A batch of activation rows, one per token.
pub struct Activations {
    ty: GgmlType,
    tokens: usize,
    cols: usize,
    floats: Vec<f32>,
    blocks: Vec<u8>,
    /// Each block's `d` (and Q8_1's `s`) as f32 (Q8_0/Q8_1 widen halves exactly, Q8_K
    /// stores f32), so kernels read a float instead of converting a half per product.
    d: Vec<f32>,
    s: Vec<f32>,
    /// The same widened scales block-major per tile of [`PANEL`] tokens (the last tile
    /// padded with the last token): tile `k`, block `i`, token `t` at
    /// `(k · blocks + i) · PANEL + t`, so a panel kernel reads one contiguous run.
    tile_d: Vec<f32>,
    tile_s: Vec<f32>,
    /// Q8_0 batches: [`ActTile::bias`] of every tile, in the same block-major order.
    tile_bias: Vec<i32>,
    /// Q8_K batches: the tokens in lanes, laid out when a kernel first asks.
    lanes: OnceLock<TokenLanes>,
}

/// [`PANEL`] tokens' activation blocks and their widened scales, block-major (`d[i ·
/// PANEL + t]`; `s` empty for Q8_0). Tokens past the batch repeat its last token.
#[derive(Clone, Copy, Debug)]
pub struct ActTile<'a> {
    pub blocks: [&'a [u8]; PANEL],
    pub d: &'a [f32],
    pub s: &'a [f32],
    /// Q8_0 only: `−128 · Σ y` over each group of four activations (the eight i32 lanes
    /// of a block), block-major as `d` (`bias[(i · PANEL + t) · 8 + lane]`). A product
    /// of weights offset by +128 (unsigned bytes) that starts from it gives the lanes of
    /// the signed product exactly.
    pub bias: &'a [i32],
}

/// The i32 lanes of one block's product: lane `l` covers elements `4l..4l + 4`.
pub const LANES_PER_BLOCK: usize = QK / 4;

/// One token's quantized activations: the blocks and their scales as f32.
#[derive(Clone, Copy, Debug)]
pub struct ActRow<'a> {
    pub blocks: &'a [u8],
    pub d: &'a [f32],
    pub s: &'a [f32],
}

impl Activations {
    /// Prepares `x` (`tokens × cols`, row-major) for weights of type `weight`. `cols` must
    /// be a whole number of the weight type's blocks (checked at load).
    pub fn new(weight: GgmlType, x: &[f32], cols: usize) -> Activations {
        Activations::build(weight, x, cols, |rows, row_bytes, quantize| {
            for (i, out) in rows.chunks_exact_mut(row_bytes).enumerate() {
                quantize(i, out);
            }
        })
    }

    /// [`Activations::new`], the tokens quantized on the threads of `pool` (the same
    /// bytes: each row is quantized alone).
    pub fn on(pool: &Pool, weight: GgmlType, x: &[f32], cols: usize) -> Activations {
        Activations::build(weight, x, cols, |rows, row_bytes, quantize| {
            pool.for_each_chunk(rows, row_bytes, |i, out| quantize(i, out));
        })
    }

    /// The activations, with `each_row(blocks, row_bytes, quantize)` calling `quantize(t,
    /// row)` for every token's row of `blocks`.
    fn build(
        weight: GgmlType,
        x: &[f32],
        cols: usize,
        each_row: impl FnOnce(&mut [u8], usize, &(dyn Fn(usize, &mut [u8]) + Sync)),
    ) -> Activations {
        let ty = activation_type(weight);
        let tokens = x.len().checked_div(cols).unwrap_or(0);
        let mut act = Activations {
            ty,
            tokens,
            cols,
            floats: Vec::new(),
            blocks: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            tile_d: Vec::new(),
            tile_s: Vec::new(),
            tile_bias: Vec::new(),
            lanes: OnceLock::new(),
        };
        if ty == GgmlType::F32 {
            act.floats = x.to_vec();
            return act;
        }
        let row_bytes = cols / ty.block_size() * ty.type_size();
        act.blocks = vec![0u8; row_bytes * tokens];
        let quantize = |t: usize, out: &mut [u8]| {
            let row = x.get(t * cols..(t + 1) * cols).unwrap_or_default();
            match ty {
                GgmlType::Q8_0 => quantize_q8_0(row, out),
                GgmlType::Q8_1 => quantize_q8_1(row, out),
                _ => quant::quantize(GgmlType::Q8K, row, out),
            }
        };
        if row_bytes > 0 {
            each_row(&mut act.blocks, row_bytes, &quantize);
        }
        act.widen_scales();
        act
    }

    fn widen_scales(&mut self) {
        let half = |b: [u8; 2]| half::f16::from_le_bytes(b).to_f32();
        match self.ty {
            GgmlType::Q8_0 => {
                let blocks: &[BlockQ8_0] = as_blocks(&self.blocks).unwrap_or_default();
                self.d = blocks.iter().map(|b| half(b.d)).collect();
            }
            GgmlType::Q8_1 => {
                let blocks: &[BlockQ8_1] = as_blocks(&self.blocks).unwrap_or_default();
                self.d = blocks.iter().map(|b| half(b.d)).collect();
                self.s = blocks.iter().map(|b| half(b.s)).collect();
            }
            GgmlType::Q8K => {
                let blocks: &[BlockQ8K] = as_blocks(&self.blocks).unwrap_or_default();
                self.d = blocks.iter().map(|b| f32::from_le_bytes(b.d)).collect();
            }
            _ => {}
        }
        self.tile_d = self.block_major(&self.d);
        self.tile_s = self.block_major(&self.s);
        if self.ty == GgmlType::Q8_0 && self.tokens > 1 {
            self.tile_bias = self.lane_bias();
        }
    }

    /// [`ActTile::bias`] of every tile: per tile, block and token, `−128 ·` each lane's
    /// sum of activations.
    fn lane_bias(&self) -> Vec<i32> {
        let blocks: Vec<&[BlockQ8_0]> =
            (0..self.tokens).map(|t| as_blocks(self.blocks(t)).unwrap_or_default()).collect();
        let per_token = blocks.first().map_or(0, |b| b.len());
        let mut out = Vec::with_capacity(self.tiles() * per_token * PANEL * LANES_PER_BLOCK);
        for k in 0..self.tiles() {
            for i in 0..per_token {
                for t in 0..PANEL {
                    let token = (k * PANEL + t).min(self.tokens - 1);
                    let qs = blocks.get(token).and_then(|b| b.get(i)).map_or([0; QK], |b| b.qs);
                    out.extend(
                        qs.chunks_exact(4)
                            .map(|l| -128 * l.iter().map(|&q| i32::from(q)).sum::<i32>()),
                    );
                }
            }
        }
        out
    }

    /// Per-token scales (`tokens × blocks`) laid out as [`ActTile`] reads them.
    fn block_major(&self, per_token: &[f32]) -> Vec<f32> {
        let blocks = per_token.len().checked_div(self.tokens).unwrap_or(0);
        let last = self.tokens.saturating_sub(1);
        let mut out = Vec::with_capacity(self.tiles() * blocks * PANEL);
        for k in 0..self.tiles() {
            for i in 0..blocks {
                for t in 0..PANEL {
                    let token = (k * PANEL + t).min(last);
                    out.push(per_token.get(token * blocks + i).copied().unwrap_or(0.0));
                }
            }
        }
        out
    }

    /// The number of [`PANEL`]-token tiles covering the batch.
    pub fn tiles(&self) -> usize {
        self.tokens.div_ceil(PANEL)
    }

    /// Tokens `k · PANEL ..` as a tile (quantized weights with a panel kernel).
    pub fn tile(&self, k: usize) -> ActTile<'_> {
        let last = self.tokens.saturating_sub(1);
        let tiles = self.tiles().max(1);
        let (nd, ns) = (self.tile_d.len() / tiles, self.tile_s.len() / tiles);
        let nb = self.tile_bias.len() / tiles;
        ActTile {
            blocks: std::array::from_fn(|t| self.blocks((k * PANEL + t).min(last))),
            d: self.tile_d.get(k * nd..(k + 1) * nd).unwrap_or_default(),
            s: self.tile_s.get(k * ns..(k + 1) * ns).unwrap_or_default(),
            bias: self.tile_bias.get(k * nb..(k + 1) * nb).unwrap_or_default(),
        }
    }

    /// The batch's Q8_K blocks with the tokens in lanes (empty for other types).
    pub fn token_lanes(&self) -> &TokenLanes {
        self.lanes.get_or_init(|| {
            let tokens = if self.ty == GgmlType::Q8K { self.tokens } else { 0 };
            TokenLanes::new(tokens, |t| self.blocks(t))
        })
    }

    /// Token `t`'s blocks and widened scales.
    pub fn row(&self, t: usize) -> ActRow<'_> {
        let tokens = self.tokens.max(1);
        let (nd, ns) = (self.d.len() / tokens, self.s.len() / tokens);
        ActRow {
            blocks: self.blocks(t),
            d: self.d.get(t * nd..(t + 1) * nd).unwrap_or_default(),
            s: self.s.get(t * ns..(t + 1) * ns).unwrap_or_default(),
        }
    }

    /// Whether these activations serve weights of type `weight`.
    pub fn fits(&self, weight: GgmlType) -> bool {
        activation_type(weight) == self.ty
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Tokens `k · T ..` as f32 rows (float weights); past the batch, its last token.
    pub fn float_tile<const T: usize>(&self, k: usize) -> [&[f32]; T] {
        let last = self.tokens.saturating_sub(1);
        std::array::from_fn(|t| self.floats((k * T + t).min(last)))
    }

    /// Token `t`'s f32 row (float weights).
    pub fn floats(&self, t: usize) -> &[f32] {
        self.floats.get(t * self.cols..(t + 1) * self.cols).unwrap_or_default()
    }

    /// Token `t`'s row of blocks (quantized weights).
    pub fn blocks(&self, t: usize) -> &[u8] {
        let n = self.blocks.len() / self.tokens.max(1);
        self.blocks.get(t * n..(t + 1) * n).unwrap_or_default()
    }
}

/// The largest magnitude of a block.
fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |a, v| a.max(v.abs()))
}

/// `x · id` rounded half to even, saturated to i8 (`_mm256_round_ps` then packs); `|x ·
/// id| <= 127` here, inside the exact range of ggml's rounding trick.
fn q8(x: f32, id: f32) -> i8 {
    quant::nearest_int(x * id).clamp(-128, 127) as i8
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// llama.cpp's x86 Q8_0: `d = amax/127` and the multiplier `127/amax` (not `1/d`).
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let Some(blocks) = as_blocks_mut::<BlockQ8_0>(out) else { return };
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK)) {
        let m = amax(x);
        let id = if m != 0.0 { 127.0 / m } else { 0.0 };
        b.d = f16_bytes(m / 127.0);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = q8(v, id);
        }
    }
}

/// llama.cpp's x86 Q8_1: Q8_0 plus `s = d · Σq`.
pub fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    let Some(blocks) = as_blocks_mut::<BlockQ8_1>(out) else { return };
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK)) {
        let m = amax(x);
        let d = m / 127.0;
        let id = if m != 0.0 { 127.0 / m } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = q8(v, id);
            sum += i32::from(*q);
        }
        b.d = f16_bytes(d);
        b.s = f16_bytes(d * sum as f32);
    }
}
