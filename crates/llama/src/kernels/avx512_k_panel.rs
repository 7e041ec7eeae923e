//! AVX-512BW panel kernels of the K-quants: [`QUANT_ROWS`] weight rows against [`PANEL`]
//! tokens per pass, two rows per 512-bit register (one per 256-bit half), so each
//! `maddubs`, `madd`, add, conversion and `fma` serves two products and each token's
//! activation chunk is loaded once for four rows.
//!
//! Each half is exactly the AVX2 K-quant panel's register for its row: the same unpacked
//! levels and scale vectors, the same integer lanes and offset correction, the same
//! `d_y · d` scale and `fma` per super-block; the mins term and the fold are that panel's
//! per row. Every output therefore has the one-token bits.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, as_blocks,
};

use super::avx2::PREFETCH_AHEAD;
use super::avx2_k::{
    Decoded, Q3K_OFFSET, Q6K_OFFSET, act, prep_q2_k, prep_q3_k, prep_q4_k, prep_q5_k, prep_q6_k,
};
use super::avx2_k_panel::weighted_bsums;
use super::avx2_panel::{tile_blocks, walkable};
use super::avx512_pairs::{PAIRS, ROWS, RowsOut, finish_pairs, pair_i, pair_ps};
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
    /// Per row and token: `d_y · d`, and the offset correction (0 for the mins types).
    d: [[f32; PANEL]; ROWS],
    corrections: [[i32; PANEL]; ROWS],
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
    let mut acc = [[_mm512_setzero_ps(); PANEL]; PAIRS];
    let mut mins = [_mm256_setzero_ps(); ROWS];
    let mut p = Pairs {
        levels: [[_mm512_setzero_si512(); 8]; PAIRS],
        scales: [[_mm512_setzero_si512(); 8]; PAIRS],
        d: [[0f32; PANEL]; ROWS],
        corrections: [[0i32; PANEL]; ROWS],
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
            // SAFETY: writes the 8 floats of `p.d[r]`.
            unsafe {
                _mm256_storeu_ps(p.d[r].as_mut_ptr(), _mm256_mul_ps(dy, _mm256_set1_ps(b.d)))
            };
            let sums = weighted_bsums(&ys, &b.ints);
            if OFFSET == 0 {
                let dmin = _mm256_mul_ps(dy, _mm256_set1_ps(b.dmin));
                mins[r] = _mm256_add_ps(mins[r], _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(sums)));
            } else {
                let c = _mm256_mullo_epi32(sums, _mm256_set1_epi32(OFFSET));
                // SAFETY: writes the 8 integers of `p.corrections[r]`.
                unsafe { _mm256_storeu_si256(p.corrections[r].as_mut_ptr().cast(), c) };
            }
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
        for (t, y) in ys.iter().enumerate() {
            let mut lanes = [_mm512_setzero_si512(); PAIRS];
            for c in 0..8 {
                let a = _mm512_broadcast_i64x4(act(y, c));
                for (l, (levels, scales)) in lanes.iter_mut().zip(p.levels.iter().zip(&p.scales)) {
                    let products = _mm512_maddubs_epi16(levels[c], a);
                    *l = _mm512_add_epi32(*l, _mm512_madd_epi16(products, scales[c]));
                }
            }
            for (q, l) in lanes.iter().enumerate() {
                let (lo, hi) = (2 * q, 2 * q + 1);
                let mut l = *l;
                if OFFSET != 0 {
                    // Lane 0 of each half.
                    let (cl, ch) = (p.corrections[lo][t], p.corrections[hi][t]);
                    let first = pair_i(
                        _mm256_setr_epi32(cl, 0, 0, 0, 0, 0, 0, 0),
                        _mm256_setr_epi32(ch, 0, 0, 0, 0, 0, 0, 0),
                    );
                    l = _mm512_sub_epi32(l, first);
                }
                let scale = pair_ps(p.d[lo][t], p.d[hi][t]);
                acc[q][t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(l), acc[q][t]);
            }
        }
    }
    // As the AVX2 panel: the one-token kernels add `sign · mins` with sign −1.
    let extra = mins.map(|m| _mm256_mul_ps(_mm256_set1_ps(-1.0), m));
    finish_pairs(&acc, &extra, out);
}
