//! AVX-VNNI panel kernels for the 32-element block types: one weight row against
//! [`PANEL`] tokens per pass, as the AVX2 panels, but each block's eight integer lanes
//! come from one `vpdpbusd` (unsigned × signed bytes, added into i32 lanes) instead of
//! sign, `maddubs` and `madd`.
//!
//! `vpdpbusd` wants unsigned weights. The signed types (Q4_0, Q5_0, Q8_0) are therefore
//! offset by +128 and the product starts from the tile's `−128 · Σ y` per lane
//! ([`ActTile::bias`]): `Σ (q + 128) · y − 128 · Σ y = Σ q · y`, the same exact integers
//! as the sign trick's. Per token, the scale product is then added as the one-token
//! kernel adds it, so every output has the one-token bits.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    Block, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, as_blocks,
};

use super::activations::LANES_PER_BLOCK;
use super::avx2::{PREFETCH_AHEAD, f16, high_bits, load32i, nibbles, plus_128};
use super::avx2_panel::{add_mins, checked_panel, finish, tile_blocks, walkable};
use super::{ActTile, PANEL, Panels};

/// The AVX2 panels with these for the 32-element block types, if this CPU has AVX-VNNI.
pub fn upgrade(panels: Panels) -> Option<Panels> {
    is_x86_feature_detected!("avxvnni").then_some(Panels {
        q4_0: super::Panel::Quant(panel_q4_0),
        q4_1: super::Panel::Quant(panel_q4_1),
        q5_0: super::Panel::Quant(panel_q5_0),
        q5_1: super::Panel::Quant(panel_q5_1),
        q8_0: super::Panel::Quant(panel_q8_0),
        ..panels
    })
}

checked_panel! {
    panel_q4_0 => q4_0_body;
    panel_q4_1 => q4_1_body;
    panel_q5_0 => q5_0_body;
    panel_q5_1 => q5_1_body;
    panel_q8_0 => q8_0_body;
}

/// One decoded weight block: its 32 levels as unsigned bytes (offset by +128 for the
/// signed types), its scale and its minimum (0 for the types without one).
pub(super) type Decoded = (__m256i, f32, f32);

/// The panel loop. `prep` decodes a weight block, `qs` gives an activation block's
/// bytes. `SIGNED`: the levels carry +128 and each product starts from the tile's bias;
/// `MINS`: the type has `m · s` terms.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
fn panel<W: Block, A: Block, const SIGNED: bool, const MINS: bool>(
    w: &[u8],
    tile: &ActTile,
    out: &mut [f32; PANEL],
    prep: impl Fn(&W) -> Decoded,
    qs: impl Fn(&A) -> &[i8; 32],
) {
    let weights: &[W] = as_blocks(w).unwrap_or_default();
    let acts = tile_blocks::<A>(tile);
    let mut n = walkable(weights, &acts, tile, MINS);
    if SIGNED {
        n = n.min(tile.bias.len() / (PANEL * LANES_PER_BLOCK));
    }
    let (mut acc, mut mins) = ([_mm256_setzero_ps(); PANEL], _mm256_setzero_ps());
    let mut scales = [0f32; PANEL];
    for i in 0..n {
        // SAFETY: `i < n`, and `n` is at most every token's block count and the tile's
        // runs' lengths over `PANEL` (and `PANEL · 8` for the bias), so each block, the
        // `PANEL` scales from `i · PANEL` and the bias lanes read are in bounds.
        unsafe {
            let x = weights.get_unchecked(i);
            // A hint only (the address need not be valid): the rows stream from memory.
            _mm_prefetch::<_MM_HINT_T0>((x as *const W).cast::<i8>().wrapping_add(PREFETCH_AHEAD));
            let (u, dw, mw) = prep(x);
            let d = _mm256_loadu_ps(tile.d.as_ptr().add(i * PANEL));
            _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_mul_ps(_mm256_set1_ps(dw), d));
            let bias = tile.bias.as_ptr().add(i * PANEL * LANES_PER_BLOCK);
            for (t, a) in acc.iter_mut().enumerate() {
                let start = if SIGNED {
                    _mm256_loadu_si256(bias.add(t * LANES_PER_BLOCK).cast())
                } else {
                    _mm256_setzero_si256()
                };
                let y = load32i(qs(acts[t].get_unchecked(i)));
                let lanes = _mm256_dpbusd_avx_epi32(start, u, y);
                let scale = _mm256_broadcast_ss(scales.get_unchecked(t));
                *a = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(lanes), *a);
            }
            if MINS {
                mins = add_mins(mins, mw, tile.s.as_ptr().add(i * PANEL));
            }
        }
    }
    finish(acc, mins, out);
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn q4_0_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    panel::<_, _, true, false>(w, tile, out, |x| unsigned_q4_0(x), |y: &BlockQ8_0| &y.qs);
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn q4_1_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    panel::<_, _, false, true>(w, tile, out, |x| unsigned_q4_1(x), |y: &BlockQ8_1| &y.qs);
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn q5_0_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    panel::<_, _, true, false>(w, tile, out, |x| unsigned_q5_0(x), |y: &BlockQ8_0| &y.qs);
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn q5_1_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    panel::<_, _, false, true>(w, tile, out, |x| unsigned_q5_1(x), |y: &BlockQ8_1| &y.qs);
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn q8_0_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    panel::<_, _, true, false>(w, tile, out, |x| unsigned_q8_0(x), |y: &BlockQ8_0| &y.qs);
}

/// A Q4_0 block as `vpdpbusd` takes it: levels + 128, scale, no minimum.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn unsigned_q4_0(x: &BlockQ4_0) -> Decoded {
    (plus_128(nibbles(&x.qs), 8), f16(x.d), 0.0)
}

/// A Q4_1 block: levels, scale and minimum.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn unsigned_q4_1(x: &BlockQ4_1) -> Decoded {
    (nibbles(&x.qs), f16(x.d), f16(x.m))
}

/// A Q5_0 block: levels + 128, scale, no minimum.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn unsigned_q5_0(x: &BlockQ5_0) -> Decoded {
    (plus_128(_mm256_or_si256(nibbles(&x.qs), high_bits(x.qh)), 16), f16(x.d), 0.0)
}

/// A Q5_1 block: levels, scale and minimum.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn unsigned_q5_1(x: &BlockQ5_1) -> Decoded {
    (_mm256_or_si256(nibbles(&x.qs), high_bits(x.qh)), f16(x.d), f16(x.m))
}

/// A Q8_0 block: levels + 128, scale, no minimum.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn unsigned_q8_0(x: &BlockQ8_0) -> Decoded {
    (plus_128(load32i(&x.qs), 0), f16(x.d), 0.0)
}
