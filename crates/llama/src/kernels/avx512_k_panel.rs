//! AVX-512BW panel kernels of the K-quants: [`QUANT_ROWS`] weight rows against [`PANEL`]
//! tokens per pass, two rows per 512-bit register (one per 256-bit half), so each
//! `maddubs`, `madd`, add, conversion and `fma` serves two products and each token's
//! activation chunk is loaded once for four rows.
//!
//! Each half is exactly the AVX2 K-quant panel's register for its row: the same unpacked
//! levels and scale vectors, the same integer lanes; their sums, the offset correction or
//! mins term and the float steps are that panel's per row. Every output therefore has the
//! one-token bits.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, as_blocks,
};

use super::avx2::PREFETCH_AHEAD;
use super::avx2_k::{
    Decoded, Q3K_OFFSET, Q6K_OFFSET, act, prep_q2_k, prep_q3_k, prep_q4_k, prep_q5_k, prep_q6_k,
};
use super::avx2_k_panel::{add_super_blocks, sum_each, weighted_bsums};
use super::avx2_panel::{tile_blocks, walkable};
use super::avx512_pairs::{PAIRS, ROWS, RowsOut};
use super::{ActTile, PANEL, Panel, Panels};

/// The panels with these for the K-quants, if this CPU has AVX-512 F, BW and VL (on top
/// of the AVX2 kernels' AVX2, FMA and F16C).
pub fn upgrade(panels: Panels) -> Option<Panels> {
    let ok = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl");
    ok.then_some(Panels {
        q2_k: Panel::QuantRows(panel_q2_k),
        q3_k: Panel::QuantRows(panel_q3_k),
        q4_k: Panel::QuantRows(panel_q4_k),
        q5_k: Panel::QuantRows(panel_q5_k),
        q6_k: Panel::QuantRows(panel_q6_k),
        ..panels
    })
}

/// Declares the panel kernels of the K-quant types. `$offset` is 0 for the types with a
/// mins term, else how far above their quants the levels are stored.
macro_rules! k_panels {
    ($($name:ident => $w:ty, $m:literal, $offset:expr, $prep:ident;)*) => {$(
        fn $name(w: [&[u8]; ROWS], tile: &ActTile, out: &mut RowsOut) {
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
            fn body(w: [&[u8]; ROWS], tile: &ActTile, out: &mut RowsOut) {
                k_panel::<$w, $m, { $offset }>(w, tile, out, |x| $prep(x));
            }
            // SAFETY: only reachable through `upgrade`, after the CPU features are
            // checked (the AVX2 ones before any upgrade is tried).
            unsafe { body(w, tile, out) }
        }
    )*};
}

k_panels! {
    panel_q2_k => BlockQ2K, 16, 0, prep_q2_k;
    panel_q3_k => BlockQ3K, 16, Q3K_OFFSET, prep_q3_k;
    panel_q4_k => BlockQ4K, 8, 0, prep_q4_k;
    panel_q5_k => BlockQ5K, 8, 0, prep_q5_k;
    panel_q6_k => BlockQ6K, 16, Q6K_OFFSET, prep_q6_k;
}

/// One super-block of every row, as the pairs take it.
struct Pairs {
    levels: [[__m512i; 8]; PAIRS],
    scales: [[__m512i; 8]; PAIRS],
    /// Per row: the block's `d` and `dmin`, and per token `Σ_g ints_g · bsum_g`.
    d: [(f32, f32); ROWS],
    bsums: [__m256i; ROWS],
}

/// The panel loop. `prep` unpacks a super-block; `M` is the number of integers it gives
/// (mins or group scales, each over `256 / M` activations); `OFFSET` as in [`k_panels`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
fn k_panel<W: Block, const M: usize, const OFFSET: i32>(
    w: [&[u8]; ROWS],
    tile: &ActTile,
    out: &mut RowsOut,
    prep: impl Fn(&W) -> Decoded<M>,
) {
    let rows: [&[W]; ROWS] = w.map(|r| as_blocks(r).unwrap_or_default());
    let acts = tile_blocks::<BlockQ8K>(tile);
    let n = rows.iter().map(|r| walkable(r, &acts, tile, false)).min().unwrap_or(0);
    // Lane `t` of `acc[r]` is row `r`'s running sum for token `t`.
    let mut acc = [_mm256_setzero_ps(); ROWS];
    let mut p = Pairs {
        levels: [[_mm512_setzero_si512(); 8]; PAIRS],
        scales: [[_mm512_setzero_si512(); 8]; PAIRS],
        d: [(0.0, 0.0); ROWS],
        bsums: [_mm256_setzero_si256(); ROWS],
    };
    for i in 0..n {
        // SAFETY: `i < n`, and `n` is at most every row's and every token's block count
        // and the scale run's length over `PANEL`, so each block and the `PANEL` scales
        // from `i · PANEL` are in bounds.
        let (ys, dy) = unsafe {
            let ys: [&BlockQ8K; PANEL] = std::array::from_fn(|t| acts[t].get_unchecked(i));
            (ys, _mm256_loadu_ps(tile.d.as_ptr().add(i * PANEL)))
        };
        for (r, row) in rows.iter().enumerate() {
            // SAFETY: `i < n <=` the row's block count.
            let x = unsafe { row.get_unchecked(i) };
            // A hint only (the address need not be valid): the rows stream from memory.
            _mm_prefetch::<_MM_HINT_T0>((x as *const W).cast::<i8>().wrapping_add(PREFETCH_AHEAD));
            let b = prep(x);
            p.d[r] = (b.d, b.dmin);
            p.bsums[r] = weighted_bsums(&ys, &b.ints);
            // Row `2q` fills the low halves of pair `q`, row `2q + 1` the high ones.
            let q = r / 2;
            for c in 0..8 {
                if r % 2 == 0 {
                    p.levels[q][c] = _mm512_castsi256_si512(b.levels[c]);
                    p.scales[q][c] = _mm512_castsi256_si512(b.scales[c]);
                } else {
                    p.levels[q][c] = _mm512_inserti64x4::<1>(p.levels[q][c], b.levels[c]);
                    p.scales[q][c] = _mm512_inserti64x4::<1>(p.scales[q][c], b.scales[c]);
                }
            }
        }
        let mut lanes = [[_mm512_setzero_si512(); PANEL]; PAIRS];
        for (t, y) in ys.iter().enumerate() {
            for c in 0..8 {
                let a = _mm512_broadcast_i64x4(act(y, c));
                for (l, (levels, scales)) in lanes.iter_mut().zip(p.levels.iter().zip(&p.scales)) {
                    let products = _mm512_maddubs_epi16(levels[c], a);
                    l[t] = _mm512_add_epi32(l[t], _mm512_madd_epi16(products, scales[c]));
                }
            }
        }
        for (q, lanes) in lanes.iter().enumerate() {
            let (lo, hi) = split(lanes);
            for (r, half) in [(2 * q, lo), (2 * q + 1, hi)] {
                acc[r] = add_super_blocks(acc[r], dy, p.d[r], sum_each(half), p.bsums[r], OFFSET);
            }
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        // SAFETY: writes the `PANEL` = 8 floats of the row's outputs.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc) };
    }
}

/// Each token's register of a pair split into its low (row `2q`) and high halves.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
fn split(pair: &[__m512i; PANEL]) -> ([__m256i; PANEL], [__m256i; PANEL]) {
    let (mut lo, mut hi) = ([_mm256_setzero_si256(); PANEL], [_mm256_setzero_si256(); PANEL]);
    for t in 0..PANEL {
        lo[t] = _mm512_castsi512_si256(pair[t]);
        hi[t] = _mm512_extracti64x4_epi64::<1>(pair[t]);
    }
    (lo, hi)
}
