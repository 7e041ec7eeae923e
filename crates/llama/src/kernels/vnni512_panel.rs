//! AVX-512 VNNI panel kernels for the 32-element block types: [`QUANT_ROWS`] weight rows
//! against [`PANEL`] tokens per pass. Two rows share each 512-bit register, one per
//! 256-bit half, so one `vpdpbusd`, one conversion and one `fma` serve two products, and
//! each token's activation block, bias and scale are loaded once for four rows.
//!
//! Each half is exactly the AVX-VNNI panel's register for its row: the same levels (+128
//! for the signed types, the product starting from the tile's bias), the same eight
//! integer lanes, the same `dw · dy` scale and `fma` per block, the same fold. Every
//! output therefore has the one-token bits.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{Block, BlockQ8_0, BlockQ8_1, as_blocks};

use super::activations::LANES_PER_BLOCK;
use super::avx2::{PREFETCH_AHEAD, load32i};
use super::avx2_panel::{add_mins, tile_blocks, walkable};
use super::avx512_pairs::{PAIRS, ROWS, RowsOut, finish_pairs, pair_i, pair_ps};
use super::vnni_panel::{
    Decoded, unsigned_q4_0, unsigned_q4_1, unsigned_q5_0, unsigned_q5_1, unsigned_q8_0,
};
use super::{ActTile, PANEL, Panel, Panels};

/// The panels with these for the 32-element block types, if this CPU has AVX-512 VNNI
/// (with AVX-512 F, BW and VL; on top of the AVX2 kernels' AVX2, FMA and F16C).
pub fn upgrade(panels: Panels) -> Option<Panels> {
    let ok = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni");
    ok.then_some(Panels {
        q4_0: Panel::QuantRows(panel_q4_0),
        q4_1: Panel::QuantRows(panel_q4_1),
        q5_0: Panel::QuantRows(panel_q5_0),
        q5_1: Panel::QuantRows(panel_q5_1),
        q8_0: Panel::QuantRows(panel_q8_0),
        ..panels
    })
}

/// Declares safe panel kernels over their `#[target_feature]` bodies.
macro_rules! checked_rows_panel {
    ($($name:ident => $body:ident;)*) => {$(
        fn $name(w: [&[u8]; ROWS], tile: &ActTile, out: &mut RowsOut) {
            // SAFETY: these kernels are only reachable through `upgrade`, which hands
            // them out only after checking that the CPU has the body's features (the
            // AVX2 ones are checked before any upgrade is tried).
            unsafe { $body(w, tile, out) }
        }
    )*};
}

checked_rows_panel! {
    panel_q4_0 => q4_0_body;
    panel_q4_1 => q4_1_body;
    panel_q5_0 => q5_0_body;
    panel_q5_1 => q5_1_body;
    panel_q8_0 => q8_0_body;
}

/// [`PREFETCH_AHEAD`] bytes past a block.
#[inline(always)]
fn ahead<W>(x: &W) -> *const i8 {
    (x as *const W).cast::<i8>().wrapping_add(PREFETCH_AHEAD)
}

/// The panel loop. `prep` decodes a weight block, `qs` gives an activation block's
/// bytes. `SIGNED`: the levels carry +128 and each product starts from the tile's bias;
/// `MINS`: the type has `m · s` terms.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn panel<W: Block, A: Block, const SIGNED: bool, const MINS: bool>(
    w: [&[u8]; ROWS],
    tile: &ActTile,
    out: &mut RowsOut,
    prep: impl Fn(&W) -> Decoded,
    qs: impl Fn(&A) -> &[i8; 32],
) {
    let rows: [&[W]; ROWS] = w.map(|r| as_blocks(r).unwrap_or_default());
    let acts = tile_blocks::<A>(tile);
    let mut n = rows.iter().map(|r| walkable(r, &acts, tile, MINS)).min().unwrap_or(0);
    if SIGNED {
        n = n.min(tile.bias.len() / (PANEL * LANES_PER_BLOCK));
    }
    let mut acc = [[_mm512_setzero_ps(); PANEL]; PAIRS];
    let mut mins = [_mm256_setzero_ps(); ROWS];
    for i in 0..n {
        // SAFETY: `i < n`, and `n` is at most every row's and every token's block count
        // and the tile's runs' lengths over `PANEL` (and `PANEL · 8` for the bias), so
        // each block, the `PANEL` scales from `i · PANEL` and the bias lanes read are in
        // bounds.
        unsafe {
            let mut u = [_mm512_setzero_si512(); PAIRS];
            let mut dw = [_mm512_setzero_ps(); PAIRS];
            for p in 0..PAIRS {
                let (x, y) = (rows[2 * p].get_unchecked(i), rows[2 * p + 1].get_unchecked(i));
                // Hints only (the addresses need not be valid): the rows stream in.
                _mm_prefetch::<_MM_HINT_T0>(ahead(x));
                _mm_prefetch::<_MM_HINT_T0>(ahead(y));
                let (lo, hi) = (prep(x), prep(y));
                u[p] = pair_i(lo.0, hi.0);
                dw[p] = pair_ps(lo.1, hi.1);
                if MINS {
                    let s = tile.s.as_ptr().add(i * PANEL);
                    mins[2 * p] = add_mins(mins[2 * p], lo.2, s);
                    mins[2 * p + 1] = add_mins(mins[2 * p + 1], hi.2, s);
                }
            }
            let d = tile.d.as_ptr().add(i * PANEL);
            let bias = tile.bias.as_ptr().add(i * PANEL * LANES_PER_BLOCK);
            for t in 0..PANEL {
                let y = _mm512_broadcast_i64x4(load32i(qs(acts[t].get_unchecked(i))));
                let start = if SIGNED {
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(bias.add(t * LANES_PER_BLOCK).cast()))
                } else {
                    _mm512_setzero_si512()
                };
                let dy = _mm512_set1_ps(*d.add(t));
                for (a, (&u, &dw)) in acc.iter_mut().zip(u.iter().zip(&dw)) {
                    let lanes = _mm512_dpbusd_epi32(start, u, y);
                    let scale = _mm512_mul_ps(dw, dy);
                    a[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(lanes), a[t]);
                }
            }
        }
    }
    finish_pairs(&acc, &mins, out);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_body(w: [&[u8]; ROWS], tile: &ActTile, out: &mut RowsOut) {
    panel::<_, _, true, false>(w, tile, out, |x| unsigned_q4_0(x), |y: &BlockQ8_0| &y.qs);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1_body(w: [&[u8]; ROWS], tile: &ActTile, out: &mut RowsOut) {
    panel::<_, _, false, true>(w, tile, out, |x| unsigned_q4_1(x), |y: &BlockQ8_1| &y.qs);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_body(w: [&[u8]; ROWS], tile: &ActTile, out: &mut RowsOut) {
    panel::<_, _, true, false>(w, tile, out, |x| unsigned_q5_0(x), |y: &BlockQ8_0| &y.qs);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_1_body(w: [&[u8]; ROWS], tile: &ActTile, out: &mut RowsOut) {
    panel::<_, _, false, true>(w, tile, out, |x| unsigned_q5_1(x), |y: &BlockQ8_1| &y.qs);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_body(w: [&[u8]; ROWS], tile: &ActTile, out: &mut RowsOut) {
    panel::<_, _, true, false>(w, tile, out, |x| unsigned_q8_0(x), |y: &BlockQ8_0| &y.qs);
}
