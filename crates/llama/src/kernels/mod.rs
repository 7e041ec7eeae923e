//! Matrix products of stored weights with f32 activations. Activations are first put in
//! the form llama.cpp's CPU backend uses for each weight type (kept f32 for float weights;
//! Q8_0, Q8_1 or Q8_K blocks for quantized ones, so integer dot products do the work),
//! then every output row is one dot product over the whole row, computed by one thread in
//! a fixed order: results do not depend on the thread count.
//!
//! Each dot product has a plain scalar version and, on x86-64 with AVX2 and FMA, a SIMD
//! one chosen at run time ([`Kernels::best`]); tests hold the two equal.

pub mod activations;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx2_k_panel;
#[cfg(target_arch = "x86_64")]
mod avx2_panel;
#[cfg(target_arch = "x86_64")]
mod avx2_softmax;
#[cfg(target_arch = "x86_64")]
mod avx512_k_panel;
#[cfg(target_arch = "x86_64")]
mod avx512_pairs;
#[cfg(target_arch = "x86_64")]
mod avx512_panel;
#[cfg(target_arch = "x86_64")]
mod avx512_values;
mod float;
mod kquants;
mod legacy;
pub mod softmax;
pub mod token_lanes;
#[cfg(target_arch = "x86_64")]
mod vnni512_k_gemm;
#[cfg(target_arch = "x86_64")]
mod vnni512_panel;
#[cfg(target_arch = "x86_64")]
mod vnni_panel;

use std::sync::OnceLock;

use amalgam_gguf::GgmlType;

pub use activations::{ActRow, ActTile, Activations};

use crate::model::Matrix;
use crate::pool::{Counter, Pool, SharedOut};

/// A dot product of a stored float row with f32 activations.
pub type FloatDot = fn(&[u8], &[f32]) -> f32;
/// A dot product of a stored quantized row with one token's activation blocks.
pub type QuantDot = fn(&[u8], ActRow) -> f32;

/// Products of a stored quantized row with a tile of [`PANEL`] tokens: `out[t] = w ·
/// a[t]`, each computed exactly as for one token alone.
pub type QuantPanel = fn(&[u8], &ActTile, &mut [f32; PANEL]);
/// Products of [`QUANT_ROWS`] stored quantized rows with a tile of [`PANEL`] tokens,
/// each computed exactly as for one row and one token alone.
pub type QuantRowsPanel = fn([&[u8]; QUANT_ROWS], &ActTile, &mut [[f32; PANEL]; QUANT_ROWS]);
/// Products of `R` stored float rows with `T` tokens' f32 activations, each computed
/// exactly as [`FloatDot`] computes it.
pub type FloatPanelOf<const R: usize, const T: usize> =
    fn([&[u8]; R], &[&[f32]; T], &mut [[f32; T]; R]);
/// The float panel of [`FLOAT_ROWS`] × [`FLOAT_TOKENS`].
pub type FloatPanel = FloatPanelOf<FLOAT_ROWS, FLOAT_TOKENS>;
/// The float panel for CPUs with 32 vector registers: [`WIDE_ROWS`] × [`WIDE_TOKENS`].
pub type WideFloatPanel = FloatPanelOf<WIDE_ROWS, WIDE_TOKENS>;

/// A whole batch's product with one weight type's matrix, on the threads of a pool:
/// `out[t · rows + r]`, each computed exactly as for one row and one token alone.
pub type Gemm = fn(&Pool, &Matrix, &Activations, &mut [f32]);

/// Batch products of the K-quant types, where a kernel set has them.
#[derive(Clone, Copy, Default)]
pub struct Gemms {
    pub q2_k: Option<Gemm>,
    pub q3_k: Option<Gemm>,
    pub q4_k: Option<Gemm>,
    pub q5_k: Option<Gemm>,
    pub q6_k: Option<Gemm>,
}

/// The fewest tokens a [`Gemm`] is used for (below, the panels).
pub const GEMM_TOKENS: usize = 32;

/// Tokens a quantized panel kernel takes per pass over a weight row: one register
/// accumulator each.
pub const PANEL: usize = 8;

/// Rows a [`QuantRowsPanel`] takes per pass: two per 512-bit register, so 16 register
/// accumulators for the tile.
pub const QUANT_ROWS: usize = 4;

/// Rows and tokens a float panel kernel takes per pass: f32 activations are four times
/// the bytes of Q8 ones, so two rows share each load of them.
pub const FLOAT_ROWS: usize = 2;
pub const FLOAT_TOKENS: usize = 4;

/// Rows and tokens a [`WideFloatPanel`] takes per pass: 24 accumulators, four rows'
/// weights and one token's activations fill 29 of 32 registers.
pub const WIDE_ROWS: usize = 4;
pub const WIDE_TOKENS: usize = 6;

/// Rows and tokens of the blocks a thread walks through, sized for L1.
const BLOCK: usize = 16;

/// Declares [`QuantDot`]s over scalar kernels that take the activation blocks alone.
macro_rules! row_dots {
    ($($name:ident => $one:ident;)*) => {$(
        pub fn $name(w: &[u8], a: super::ActRow) -> f32 {
            $one(w, a.blocks)
        }
    )*};
}
pub(crate) use row_dots;

/// Declares scalar panel kernels that run a one-token kernel per token of the tile.
macro_rules! per_token_panel {
    ($($name:ident => $one:ident;)*) => {$(
        pub fn $name(w: &[u8], tile: &super::ActTile, out: &mut [f32; super::PANEL]) {
            for (o, a) in out.iter_mut().zip(tile.blocks) {
                *o = $one(w, a);
            }
        }
    )*};
}
pub(crate) use per_token_panel;
/// `out += Σ_j weights[j] · row_j` over stored float rows (row `j` starts at byte
/// `j · stride` of `rows`; rows past its end are left out): each element adds its terms
/// in `j` order, one `fma` each, as one `out += a · row` per row would.
pub type WeightedSum = fn(&[f32], &[u8], usize, &mut [f32]);
/// `outs[q] += Σ_j weights[q][j] · row_j` for several outputs over the same rows, each
/// element exactly as a [`WeightedSum`] computes it.
pub type WeightedSums = fn(&[&[f32]], &[u8], usize, &mut [&mut [f32]]);
/// The scaled softmax of a row of scores, in place, as [`softmax::softmax`] defines it.
pub type Softmax = fn(&mut [f32], f32);

/// One set of dot-product kernels.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub name: &'static str,
    pub f32: FloatDot,
    pub f16: FloatDot,
    pub bf16: FloatDot,
    pub q4_0: QuantDot,
    pub q4_1: QuantDot,
    pub q5_0: QuantDot,
    pub q5_1: QuantDot,
    pub q8_0: QuantDot,
    pub q2_k: QuantDot,
    pub q3_k: QuantDot,
    pub q4_k: QuantDot,
    pub q5_k: QuantDot,
    pub q6_k: QuantDot,
    pub weighted_f16: WeightedSum,
    pub weighted_f32: WeightedSum,
    pub weighted_many_f16: WeightedSums,
    pub weighted_many_f32: WeightedSums,
    pub softmax: Softmax,
    pub panels: Panels,
    pub gemms: Gemms,
}

/// Panel kernels of every weight type.
#[derive(Clone, Copy)]
pub struct Panels {
    pub f32: Panel,
    pub f16: Panel,
    pub bf16: Panel,
    pub q4_0: Panel,
    pub q4_1: Panel,
    pub q5_0: Panel,
    pub q5_1: Panel,
    pub q8_0: Panel,
    pub q2_k: Panel,
    pub q3_k: Panel,
    pub q4_k: Panel,
    pub q5_k: Panel,
    pub q6_k: Panel,
}

/// A panel kernel for one weight type.
#[derive(Clone, Copy)]
pub enum Panel {
    Float(FloatPanel),
    Wide(WideFloatPanel),
    Quant(QuantPanel),
    QuantRows(QuantRowsPanel),
}

/// A dot product for one weight type.
#[derive(Clone, Copy)]
pub enum Dot {
    Float(FloatDot),
    Quant(QuantDot),
}

impl Kernels {
    /// The plain scalar kernels.
    pub fn scalar() -> &'static Kernels {
        &SCALAR
    }

    /// The fastest kernels this CPU runs, detected once.
    pub fn best() -> &'static Kernels {
        Kernels::available().last().unwrap_or(&SCALAR)
    }

    /// Every kernel set this CPU runs, detected once, plainest first: the scalar
    /// kernels, then AVX2's, then each with the next extension this CPU has swapped in
    /// (AVX-VNNI for the 32-element block types' panels, AVX-512 for the float panels,
    /// AVX-512BW for four-row K-quant panels, AVX-512 VNNI for four-row panels of the
    /// 32-element block types and the K-quants' batch products).
    /// All give the same bits; tests hold each to the scalar set.
    pub fn available() -> &'static [Kernels] {
        static ALL: OnceLock<Vec<Kernels>> = OnceLock::new();
        ALL.get_or_init(|| {
            #[allow(unused_mut, reason = "only x86-64 has SIMD sets")]
            let mut all = vec![SCALAR];
            #[cfg(target_arch = "x86_64")]
            if let Some(mut k) = avx2::kernels() {
                all.push(k);
                if let Some(panels) = vnni_panel::upgrade(k.panels) {
                    k = Kernels { name: "avx2+vnni", panels, ..k };
                    all.push(k);
                }
                if let Some(panels) = avx512_panel::upgrade(k.panels) {
                    let name = if k.name == "avx2" { "avx512" } else { "avx512+vnni" };
                    k = Kernels {
                        name,
                        panels,
                        weighted_many_f16: avx512_values::weighted_many_f16,
                        weighted_many_f32: avx512_values::weighted_many_f32,
                        ..k
                    };
                    all.push(k);
                    if let Some(panels) = avx512_k_panel::upgrade(k.panels) {
                        k = Kernels { name: "avx512bw", panels, ..k };
                        all.push(k);
                    }
                    if let Some(panels) = vnni512_panel::upgrade(k.panels) {
                        let gemms = vnni512_k_gemm::gemms().unwrap_or(k.gemms);
                        all.push(Kernels { name: "avx512vnni", panels, gemms, ..k });
                    }
                }
            }
            all
        })
    }

    /// The dot product for weights of type `ty`; `None` for activation-only types.
    pub fn dot(&self, ty: GgmlType) -> Option<Dot> {
        Some(match ty {
            GgmlType::F32 => Dot::Float(self.f32),
            GgmlType::F16 => Dot::Float(self.f16),
            GgmlType::BF16 => Dot::Float(self.bf16),
            GgmlType::Q4_0 => Dot::Quant(self.q4_0),
            GgmlType::Q4_1 => Dot::Quant(self.q4_1),
            GgmlType::Q5_0 => Dot::Quant(self.q5_0),
            GgmlType::Q5_1 => Dot::Quant(self.q5_1),
            GgmlType::Q8_0 => Dot::Quant(self.q8_0),
            GgmlType::Q2K => Dot::Quant(self.q2_k),
            GgmlType::Q3K => Dot::Quant(self.q3_k),
            GgmlType::Q4K => Dot::Quant(self.q4_k),
            GgmlType::Q5K => Dot::Quant(self.q5_k),
            GgmlType::Q6K => Dot::Quant(self.q6_k),
            GgmlType::Q8_1 | GgmlType::Q8K => return None,
        })
    }

    /// The batch product for weights of type `ty`, where there is one.
    pub fn gemm(&self, ty: GgmlType) -> Option<Gemm> {
        let g = &self.gemms;
        match ty {
            GgmlType::Q2K => g.q2_k,
            GgmlType::Q3K => g.q3_k,
            GgmlType::Q4K => g.q4_k,
            GgmlType::Q5K => g.q5_k,
            GgmlType::Q6K => g.q6_k,
            _ => None,
        }
    }

    /// The panel kernel for weights of type `ty`, where there is one.
    pub fn panel(&self, ty: GgmlType) -> Option<Panel> {
        let p = &self.panels;
        Some(match ty {
            GgmlType::F32 => p.f32,
            GgmlType::F16 => p.f16,
            GgmlType::BF16 => p.bf16,
            GgmlType::Q4_0 => p.q4_0,
            GgmlType::Q4_1 => p.q4_1,
            GgmlType::Q5_0 => p.q5_0,
            GgmlType::Q5_1 => p.q5_1,
            GgmlType::Q8_0 => p.q8_0,
            GgmlType::Q2K => p.q2_k,
            GgmlType::Q3K => p.q3_k,
            GgmlType::Q4K => p.q4_k,
            GgmlType::Q5K => p.q5_k,
            GgmlType::Q6K => p.q6_k,
            GgmlType::Q8_1 | GgmlType::Q8K => return None,
        })
    }
}

static SCALAR: Kernels = Kernels {
    name: "scalar",
    f32: float::dot_f32,
    f16: float::dot_f16,
    bf16: float::dot_bf16,
    q4_0: legacy::dot_q4_0,
    q4_1: legacy::dot_q4_1,
    q5_0: legacy::dot_q5_0,
    q5_1: legacy::dot_q5_1,
    q8_0: legacy::dot_q8_0,
    q2_k: kquants::dot_q2_k,
    q3_k: kquants::dot_q3_k,
    q4_k: kquants::dot_q4_k,
    q5_k: kquants::dot_q5_k,
    q6_k: kquants::dot_q6_k,
    weighted_f16: float::weighted_f16,
    weighted_f32: float::weighted_f32,
    weighted_many_f16: float::weighted_many_f16,
    weighted_many_f32: float::weighted_many_f32,
    softmax: softmax::softmax,
    panels: Panels {
        f32: Panel::Float(float::panel_f32),
        f16: Panel::Float(float::panel_f16),
        bf16: Panel::Float(float::panel_bf16),
        q4_0: Panel::Quant(legacy::panel_q4_0),
        q4_1: Panel::Quant(legacy::panel_q4_1),
        q5_0: Panel::Quant(legacy::panel_q5_0),
        q5_1: Panel::Quant(legacy::panel_q5_1),
        q8_0: Panel::Quant(legacy::panel_q8_0),
        q2_k: Panel::Quant(kquants::panel_q2_k),
        q3_k: Panel::Quant(kquants::panel_q3_k),
        q4_k: Panel::Quant(kquants::panel_q4_k),
        q5_k: Panel::Quant(kquants::panel_q5_k),
        q6_k: Panel::Quant(kquants::panel_q6_k),
    },
    gemms: Gemms { q2_k: None, q3_k: None, q4_k: None, q5_k: None, q6_k: None },
};

/// Rows per work item: enough items to balance the threads, few enough to keep the
/// shared counter cold.
pub(crate) fn rows_per_item(rows: usize, threads: usize) -> usize {
    rows.div_ceil(threads * 4).clamp(16, 512)
}

/// `out[t][r] = Σ_c w[r][c] · x[t][c]` for every token `t` of `act` (`out` is
/// `tokens × w.rows`, row-major), on the threads of `pool`.
///
/// # Panics
/// If `act` was prepared for another type or width, or `out` has the wrong length:
/// callers size both from the model's checked shapes.
#[allow(clippy::panic, reason = "the loader refuses activation-only weight types (tested)")]
pub fn matmul(pool: &Pool, kernels: &Kernels, w: &Matrix, act: &Activations, out: &mut [f32]) {
    let tokens = act.tokens();
    assert!(out.len() == tokens * w.rows && act.cols() == w.cols, "matmul: bad shapes");
    assert!(act.fits(w.ty), "matmul: activations prepared for another type");
    let Some(dot) = kernels.dot(w.ty) else { panic!("matmul: {} is not a weight type", w.ty) };
    if tokens == 1 {
        return matmul_one(pool, dot, w, act, out);
    }
    if let Some(gemm) = kernels.gemm(w.ty).filter(|_| tokens >= GEMM_TOKENS) {
        return gemm(pool, w, act, out);
    }
    let Some(panel) = kernels.panel(w.ty) else { panic!("matmul: {} has no panel", w.ty) };
    matmul_panels(pool, panel, w, act, out);
}

/// [`matmul`] of one token (decode): each work item fills its own contiguous run of the
/// output.
fn matmul_one(pool: &Pool, dot: Dot, w: &Matrix, act: &Activations, out: &mut [f32]) {
    let rows = w.rows;
    let ptr = SharedOut::new(out);
    let chunk = rows_per_item(rows, pool.threads());
    let items = rows.div_ceil(chunk);
    let counter = Counter::new();
    let (blocks, floats) = (act.row(0), act.floats(0));
    pool.run(&|_| {
        while let Some(c) = counter.next(items) {
            let rows_here = c * chunk..((c + 1) * chunk).min(rows);
            // SAFETY: `rows_here` is inside `0..rows = out.len()` and belongs to this
            // work item alone; `run` returns when every thread is done.
            let out =
                unsafe { std::slice::from_raw_parts_mut(ptr.at(rows_here.start), rows_here.len()) };
            for (r, o) in rows_here.zip(out) {
                match dot {
                    Dot::Float(f) => *o = f(w.row(r), floats),
                    Dot::Quant(f) => *o = f(w.row(r), blocks),
                }
            }
        }
    });
}

/// [`matmul`] of several tokens by a panel kernel.
fn matmul_panels(pool: &Pool, panel: Panel, w: &Matrix, act: &Activations, out: &mut [f32]) {
    match panel {
        Panel::Quant(f) => {
            let tiles: Vec<ActTile> = (0..act.tiles()).map(|k| act.tile(k)).collect();
            let run = |[row]: [&[u8]; 1], k: usize, res: &mut [[f32; PANEL]; 1]| {
                f(row, &tiles[k], &mut res[0]);
            };
            by_tiles(pool, w, act.tokens(), out, run);
        }
        Panel::QuantRows(f) => {
            let tiles: Vec<ActTile> = (0..act.tiles()).map(|k| act.tile(k)).collect();
            by_tiles(pool, w, act.tokens(), out, |rows, k, res| f(rows, &tiles[k], res));
        }
        Panel::Float(f) => {
            let tiles: Vec<[&[f32]; FLOAT_TOKENS]> =
                (0..act.tokens().div_ceil(FLOAT_TOKENS)).map(|k| act.float_tile(k)).collect();
            by_tiles(pool, w, act.tokens(), out, |rows, k, res| f(rows, &tiles[k], res));
        }
        Panel::Wide(f) => {
            let tiles: Vec<[&[f32]; WIDE_TOKENS]> =
                (0..act.tokens().div_ceil(WIDE_TOKENS)).map(|k| act.float_tile(k)).collect();
            by_tiles(pool, w, act.tokens(), out, |rows, k, res| f(rows, &tiles[k], res));
        }
    }
}

/// Runs `panel` over `R` rows × tile `k` of `T` tokens at a time: per work item, blocks
/// of rows, each run over every tile (the tile's activations stay in L1 across the
/// block's rows, the rows across the tiles). Past the last row, a panel repeats it.
fn by_tiles<const R: usize, const T: usize>(
    pool: &Pool,
    w: &Matrix,
    tokens: usize,
    out: &mut [f32],
    panel: impl Fn([&[u8]; R], usize, &mut [[f32; T]; R]) + Sync,
) {
    let rows = w.rows;
    let ptr = SharedOut::new(out);
    let chunk = rows_per_item(rows, pool.threads());
    let items = rows.div_ceil(chunk);
    let counter = Counter::new();
    pool.run(&|_| {
        let mut res = [[0f32; T]; R];
        while let Some(c) = counter.next(items) {
            let rows_here = c * chunk..((c + 1) * chunk).min(rows);
            for r0 in rows_here.clone().step_by(BLOCK) {
                let block = r0..(r0 + BLOCK).min(rows_here.end);
                for k in 0..tokens.div_ceil(T) {
                    let t0 = k * T;
                    for r1 in block.clone().step_by(R) {
                        let last = (r1 + R).min(block.end);
                        panel(std::array::from_fn(|i| w.row((r1 + i).min(last - 1))), k, &mut res);
                        for (r, res) in (r1..last).zip(&res) {
                            for (t, &v) in res.iter().enumerate().take(tokens - t0) {
                                // SAFETY: `(t0 + t) * rows + r < tokens * rows = out.len()`
                                // (checked by `matmul`), and each row `r` belongs to
                                // exactly one work item, so no two threads write the same
                                // element; `run` returns when every thread is done.
                                unsafe { *ptr.at((t0 + t) * rows + r) = v };
                            }
                        }
                    }
                }
            }
        }
    });
}

/// The activation type llama.cpp converts f32 inputs to for weights of type `ty`.
pub fn activation_type(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => GgmlType::F32,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        _ => GgmlType::Q8K,
    }
}

#[cfg(test)]
mod tests;
