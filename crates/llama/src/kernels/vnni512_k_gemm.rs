//! AVX-512 VNNI products of K-quant rows with a batch of tokens, tokens in lanes: the
//! activations arrive as [`TokenLanes`] (each 4-byte run of a super-block as one vector of
//! 16 tokens); a tile of [`ROWS`] rows is unpacked once into plain levels and integer
//! scales ([`RowBlock`]); then per 4-byte run one broadcast of each row's levels and one
//! `vpdpbusd` per row and 16 tokens. Each group's integer sum is multiplied by its scale
//! (`vpmulld`) into the super-block's; Q3_K/Q6_K groups start from `−offset · bsum`, and
//! Q2_K/Q4_K/Q5_K's mins term is one `vpdpwssd` per pair of groups.
//!
//! The super-block integers are exact, and the float steps per row and token are the
//! scalar kernels' (`kquants`), in their order, so every output has the one-token bits.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, as_blocks, q3k_scales,
};
use amalgam_gguf::ggml_type::QK_K;

use super::avx2::f16;
use super::avx2_k::{Decoded, prep_q2_k, prep_q3_k, prep_q4_k, prep_q5_k, prep_q6_k};
use super::kquants::{k4_scales, q2k_scales, widen};
use super::token_lanes::{LANE_TOKENS, LaneBlock};
use super::{Activations, Gemm, Gemms, rows_per_item};
use crate::model::Matrix;
use crate::pool::{Counter, Pool, SharedOut};

/// Rows per tile.
const ROWS: usize = 6;
/// Token vectors per tile (16 tokens each).
const VECTORS: usize = 2;

/// The products, if this CPU has AVX-512 F, BW, VL and VNNI (on top of the AVX2
/// kernels' AVX2, FMA and F16C).
pub fn gemms() -> Option<Gemms> {
    let ok = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni");
    ok.then_some(Gemms {
        q2_k: Some(gemm_q2_k as Gemm),
        q3_k: Some(gemm_q3_k as Gemm),
        q4_k: Some(gemm_q4_k as Gemm),
        q5_k: Some(gemm_q5_k as Gemm),
        q6_k: Some(gemm_q6_k as Gemm),
    })
}

/// One super-block of a row, unpacked: level `e` at byte `e`, and its integers.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct RowBlock {
    levels: [u8; QK_K],
    /// One per group (8 of 32 elements, or 16 of 16).
    scales: [i32; 16],
    /// Mins of groups `2p` and `2p + 1` as the low and high i16 of `mins[p]`.
    mins: [i32; 8],
    d: f32,
    dmin: f32,
}

impl RowBlock {
    const ZERO: RowBlock =
        RowBlock { levels: [0; QK_K], scales: [0; 16], mins: [0; 8], d: 0.0, dmin: 0.0 };
}

/// The levels of a decoded super-block stored in `out`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn store_levels<const M: usize>(b: &Decoded<M>, out: &mut RowBlock) {
    for (c, &v) in b.levels.iter().enumerate() {
        // SAFETY: chunk `c < 8` is bytes `32c..32c + 32` of the 256.
        unsafe { _mm256_storeu_si256(out.levels.as_mut_ptr().add(32 * c).cast(), v) };
    }
}

/// `pairs[p] = (v[2p], v[2p + 1])` as i16 halves.
fn min_pairs(v: &[i32], pairs: &mut [i32; 8]) {
    for (p, two) in pairs.iter_mut().zip(v.chunks_exact(2)) {
        *p = (two[0] & 0xFFFF) | (two[1] << 16);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q2_k(x: &BlockQ2K, out: &mut RowBlock) {
    store_levels(&prep_q2_k(x), out);
    let (scales, mins) = q2k_scales(x);
    out.scales = scales;
    min_pairs(&mins, &mut out.mins);
    (out.d, out.dmin) = (f16(x.d), f16(x.dmin));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q3_k(x: &BlockQ3K, out: &mut RowBlock) {
    store_levels(&prep_q3_k(x), out);
    out.scales = widen(q3k_scales(&x.scales));
    out.d = f16(x.d);
}

/// Q4_K/Q5_K's scales and mins.
fn k4_ints(packed: &[u8; 12], out: &mut RowBlock) {
    let (scales, mins) = k4_scales(packed);
    out.scales[..8].copy_from_slice(&scales);
    min_pairs(&mins, &mut out.mins);
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q4_k(x: &BlockQ4K, out: &mut RowBlock) {
    store_levels(&prep_q4_k(x), out);
    k4_ints(&x.scales, out);
    (out.d, out.dmin) = (f16(x.d), f16(x.dmin));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q5_k(x: &BlockQ5K, out: &mut RowBlock) {
    store_levels(&prep_q5_k(x), out);
    k4_ints(&x.scales, out);
    (out.d, out.dmin) = (f16(x.d), f16(x.dmin));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q6_k(x: &BlockQ6K, out: &mut RowBlock) {
    store_levels(&prep_q6_k(x), out);
    out.scales = widen(x.scales);
    out.d = f16(x.d);
}

/// Declares the products of the K-quant types: `$groups` scale groups per super-block,
/// levels stored `1 << $shift` above the quants (`$shift` 0: none), `$pairs` pairs of
/// mins (0: no mins term; 4: per 32 elements; 8: per 16).
macro_rules! k_gemms {
    ($($name:ident => $w:ty, $unpack:ident, $groups:literal, $shift:literal, $pairs:literal;)*) => {$(
        fn $name(pool: &Pool, w: &Matrix, act: &Activations, out: &mut [f32]) {
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            fn tile<const V: usize>(rows: &[RowBlock], acts: [&[LaneBlock]; V], out: &mut TileOut<V>) {
                k_tile::<V, $groups, $shift, $pairs>(rows, acts, out);
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            fn unpack(row: &[u8], out: &mut [RowBlock]) {
                let blocks: &[$w] = as_blocks(row).unwrap_or_default();
                for (i, x) in blocks.iter().enumerate() {
                    if let Some(o) = out.get_mut(i * ROWS) {
                        $unpack(x, o);
                    }
                }
            }
            // SAFETY (the three): only reachable through `gemms`, after the CPU features
            // are checked (the AVX2 ones before any upgrade is tried).
            let kernels = Tiles {
                unpack: |row, out| unsafe { unpack(row, out) },
                one: |rows, acts, out| unsafe { tile::<1>(rows, acts, out) },
                two: |rows, acts, out| unsafe { tile::<VECTORS>(rows, acts, out) },
            };
            by_row_tiles(pool, w, act, out, kernels);
        }
    )*};
}

k_gemms! {
    gemm_q2_k => BlockQ2K, unpack_q2_k, 16, 0, 8;
    gemm_q3_k => BlockQ3K, unpack_q3_k, 16, 2, 0;
    gemm_q4_k => BlockQ4K, unpack_q4_k, 8, 0, 4;
    gemm_q5_k => BlockQ5K, unpack_q5_k, 8, 0, 4;
    gemm_q6_k => BlockQ6K, unpack_q6_k, 16, 5, 0;
}

/// A tile's outputs: `out[r][v][t]` for row `r` and token `16v + t`.
type TileOut<const V: usize> = [[[f32; LANE_TOKENS]; V]; ROWS];

/// A type's kernels: `unpack(row, out)` fills `out[i · ROWS]` with super-block `i`; `one`
/// and `two` run a tile over one or two vectors of tokens.
struct Tiles {
    unpack: fn(&[u8], &mut [RowBlock]),
    one: fn(&[RowBlock], [&[LaneBlock]; 1], &mut TileOut<1>),
    two: fn(&[RowBlock], [&[LaneBlock]; VECTORS], &mut TileOut<VECTORS>),
}

/// Runs the tiles over the matrix: per work item, tiles of [`ROWS`] rows (past the last
/// row, a tile repeats it), each unpacked once and run over every pair of token vectors.
fn by_row_tiles(pool: &Pool, w: &Matrix, act: &Activations, out: &mut [f32], k: Tiles) {
    let lanes = act.token_lanes();
    let (rows, tokens, groups) = (w.rows, act.tokens(), lanes.groups());
    let ptr = SharedOut::new(out);
    let chunk = rows_per_item(rows, pool.threads()).next_multiple_of(ROWS);
    let items = rows.div_ceil(chunk);
    let counter = Counter::new();
    pool.run(&|_| {
        let mut unpacked = vec![RowBlock::ZERO; ROWS * lanes.per_row()];
        let mut two = [[[0f32; LANE_TOKENS]; VECTORS]; ROWS];
        let mut one = [[[0f32; LANE_TOKENS]; 1]; ROWS];
        while let Some(c) = counter.next(items) {
            let rows_here = c * chunk..((c + 1) * chunk).min(rows);
            for r0 in rows_here.clone().step_by(ROWS) {
                let last = (r0 + ROWS).min(rows_here.end);
                for r in 0..ROWS {
                    (k.unpack)(w.row((r0 + r).min(last - 1)), &mut unpacked[r..]);
                }
                let mut v0 = 0;
                while v0 + VECTORS <= groups {
                    (k.two)(&unpacked, [lanes.group(v0), lanes.group(v0 + 1)], &mut two);
                    store(ptr, (r0..last, rows), tokens, v0, &two);
                    v0 += VECTORS;
                }
                if v0 < groups {
                    (k.one)(&unpacked, [lanes.group(v0)], &mut one);
                    store(ptr, (r0..last, rows), tokens, v0, &one);
                }
            }
        }
    });
}

/// Writes a tile's outputs for rows `here` (of `rows`) and the batch's tokens from
/// vector `v0` on.
fn store<const V: usize>(
    ptr: SharedOut<f32>,
    (here, rows): (std::ops::Range<usize>, usize),
    tokens: usize,
    v0: usize,
    res: &TileOut<V>,
) {
    let first = v0 * LANE_TOKENS;
    for t in 0..(V * LANE_TOKENS).min(tokens.saturating_sub(first)) {
        // Token-major: the tile's rows are adjacent in each token's outputs.
        for (i, r) in here.clone().enumerate() {
            // SAFETY: `(first + t) · rows + r < tokens · rows = out.len()` (checked by
            // `matmul`), and each row belongs to exactly one work item; `run` returns
            // when every thread is done.
            unsafe { *ptr.at((first + t) * rows + r) = res[i][t / LANE_TOKENS][t % LANE_TOKENS] };
        }
    }
}

/// One tile: [`ROWS`] unpacked rows (super-block `i` of row `r` at `rows[i · ROWS + r]`)
/// against `V` vectors of tokens. `G` groups per super-block, `SHIFT` and `PAIRS` as in
/// [`k_gemms`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn k_tile<const V: usize, const G: usize, const SHIFT: u32, const PAIRS: usize>(
    rows: &[RowBlock],
    acts: [&[LaneBlock]; V],
    out: &mut TileOut<V>,
) {
    let steps = QK_K / 4 / G;
    let n = acts.iter().map(|a| a.len()).min().unwrap_or(0).min(rows.len() / ROWS);
    let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
    for i in 0..n {
        let w = &rows[i * ROWS..(i + 1) * ROWS];
        let mut a: [&LaneBlock; V] = [&acts[0][i]; V];
        for v in 1..V {
            a[v] = &acts[v][i];
        }
        let mut sums = [[_mm512_setzero_si512(); V]; ROWS];
        for g in 0..G {
            let mut start = [_mm512_setzero_si512(); V];
            if SHIFT > 0 {
                for v in 0..V {
                    let neg = load_i(&a[v].neg_bsums[g]);
                    start[v] = _mm512_slli_epi32::<SHIFT>(neg);
                }
            }
            let mut group = [start; ROWS];
            for k in g * steps..(g + 1) * steps {
                let mut y = [_mm512_setzero_si512(); V];
                for v in 0..V {
                    y[v] = load_i(&a[v].qs[k]);
                }
                for r in 0..ROWS {
                    let x = levels_at(&w[r], k);
                    for v in 0..V {
                        group[r][v] = _mm512_dpbusd_epi32(group[r][v], x, y[v]);
                    }
                }
            }
            for r in 0..ROWS {
                let scale = _mm512_set1_epi32(w[r].scales[g]);
                for v in 0..V {
                    sums[r][v] =
                        _mm512_add_epi32(sums[r][v], _mm512_mullo_epi32(group[r][v], scale));
                }
            }
        }
        for r in 0..ROWS {
            for v in 0..V {
                let dy = load_f(&a[v].d);
                let d = _mm512_mul_ps(_mm512_set1_ps(w[r].d), dy);
                acc[r][v] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sums[r][v]), acc[r][v]);
                if PAIRS > 0 {
                    let mut mins = _mm512_setzero_si512();
                    for p in 0..PAIRS {
                        let y = if PAIRS == 4 { &a[v].pairs32[p] } else { &a[v].pairs16[p] };
                        let m = _mm512_set1_epi32(w[r].mins[p]);
                        mins = _mm512_dpwssd_epi32(mins, m, load_i(y));
                    }
                    let dmin = _mm512_mul_ps(_mm512_set1_ps(w[r].dmin), dy);
                    acc[r][v] = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(mins), acc[r][v]);
                }
            }
        }
    }
    for r in 0..ROWS {
        for v in 0..V {
            // SAFETY: writes the 16 floats of `out[r][v]`.
            unsafe { _mm512_storeu_ps(out[r][v].as_mut_ptr(), acc[r][v]) };
        }
    }
}

/// Levels `4k..4k + 4` of a row broadcast to every lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
fn levels_at(w: &RowBlock, k: usize) -> __m512i {
    let run = [w.levels[4 * k], w.levels[4 * k + 1], w.levels[4 * k + 2], w.levels[4 * k + 3]];
    _mm512_set1_epi32(i32::from_le_bytes(run))
}

/// A 64-byte value as a vector.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
fn load_i<T: Copy>(v: &T) -> __m512i {
    const { assert!(size_of::<T>() == 64) };
    // SAFETY: reads the 64 bytes of `v`.
    unsafe { _mm512_loadu_si512((v as *const T).cast()) }
}

/// 16 floats as a vector.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
fn load_f(v: &[f32; 16]) -> __m512 {
    // SAFETY: reads the 64 bytes of `v`.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}
