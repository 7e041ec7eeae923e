//! AVX2 panel kernels: one weight row against [`PANEL`] tokens per pass, one register
//! accumulator per token, so each weight is loaded and decoded once for all of them.
//!
//! - The 32-element block types: per token, each block's scale product, integer lanes
//!   and `fma` are the one-token kernel's, and the `m · s` terms of all tokens are summed
//!   in one vector (lane `t` holds token `t`'s running sum, in the scalar kernel's order).
//! - The float types: the one-token kernel keeps 32 lanes (four vectors); the panel walks
//!   the row once per vector of lanes, so each lane still adds its elements in order.
//!
//! Every output therefore has the one-token bits.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    Block, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, as_blocks,
};

use super::avx2::{
    PREFETCH_AHEAD, decode_bf16, decode_f16, decode_f32, dot_u8_i8, f16, high_bits, load_bf16,
    load_f16, load_f32, load32i, nibbles,
};
use super::float::{LANES, fold};
use super::{ActTile, FLOAT_ROWS, FLOAT_TOKENS, PANEL};

/// Declares safe panel kernels that call their `#[target_feature]` bodies (this file's
/// and `vnni_panel`'s).
macro_rules! checked_panel {
    ($($name:ident => $body:ident;)*) => {$(
        pub(super) fn $name(w: &[u8], tile: &super::ActTile, out: &mut [f32; super::PANEL]) {
            // SAFETY: these kernels are only reachable through the kernel set their
            // module hands out (`avx2::kernels()`, `vnni_panel::upgrade`), which does so
            // only after checking that the CPU has the body's features.
            unsafe { $body(w, tile, out) }
        }
    )*};
}
pub(super) use checked_panel;

checked_panel! {
    panel_q4_0 => q4_0_body;
    panel_q4_1 => q4_1_body;
    panel_q5_0 => q5_0_body;
    panel_q5_1 => q5_1_body;
    panel_q8_0 => q8_0_body;
}

/// One decoded weight block: its 32 levels as `dot` takes them (unsigned, or signed
/// with their magnitudes), its scale and its minimum (0 for the types without one).
type Decoded = (Levels, f32, f32);

/// A block's levels: unsigned ones once, signed ones with their magnitudes (taken once
/// per block rather than per token).
#[derive(Clone, Copy)]
struct Levels {
    q: __m256i,
    abs: __m256i,
}

/// Levels of an unsigned type.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn unsigned(q: __m256i) -> Levels {
    Levels { q, abs: q }
}

/// Levels of a signed type, with their magnitudes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn signed(q: __m256i) -> Levels {
    Levels { q, abs: _mm256_sign_epi8(q, q) }
}

/// `Σ q[i] · y[i]` of signed levels: `|q| · (y · sign q)`, exact as the one-token
/// kernels' sign trick.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_signed(l: Levels, y: &[i8; 32]) -> __m256i {
    dot_u8_i8(l.abs, _mm256_sign_epi8(load32i(y), l.q))
}

/// The panel loop: `prep` decodes a weight block, `dot` gives its eight integer lanes
/// with one token's activation block. `MINS` says whether the type has `m · s` terms.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn panel<W: Block, A: Block, const MINS: bool>(
    w: &[u8],
    tile: &ActTile,
    out: &mut [f32; PANEL],
    prep: impl Fn(&W) -> Decoded,
    dot: impl Fn(Levels, &A) -> __m256i,
) {
    let weights: &[W] = as_blocks(w).unwrap_or_default();
    let acts = tile_blocks::<A>(tile);
    let n = walkable(weights, &acts, tile, MINS);
    let (mut acc, mut mins) = ([_mm256_setzero_ps(); PANEL], _mm256_setzero_ps());
    for i in 0..n {
        // SAFETY: `i < n`, and `n` is at most every token's block count and the scale
        // runs' lengths over `PANEL`, so each block and the `PANEL` scales from
        // `i · PANEL` are in bounds.
        unsafe {
            let x = weights.get_unchecked(i);
            // A hint only (the address need not be valid): the rows stream from memory.
            _mm_prefetch::<_MM_HINT_T0>((x as *const W).cast::<i8>().wrapping_add(PREFETCH_AHEAD));
            let (q, dw, mw) = prep(x);
            let dw = _mm256_set1_ps(dw);
            let d = tile.d.as_ptr().add(i * PANEL);
            for (t, a) in acc.iter_mut().enumerate() {
                let lanes = dot(q, acts[t].get_unchecked(i));
                let scale = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*d.add(t)));
                *a = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(lanes), *a);
            }
            if MINS {
                mins = add_mins(mins, mw, tile.s.as_ptr().add(i * PANEL));
            }
        }
    }
    finish(acc, mins, out);
}

/// A tile's activation blocks, typed.
pub(super) fn tile_blocks<'a, A: Block>(tile: &ActTile<'a>) -> [&'a [A]; PANEL] {
    tile.blocks.map(|b| as_blocks(b).unwrap_or_default())
}

/// The blocks a panel may walk: at most the row's, every token's, and the tile's scale
/// runs over [`PANEL`] (the `s` run's too when `mins`; the bias run's over `PANEL · 8`
/// when it is given).
pub(super) fn walkable<W, A>(
    weights: &[W],
    acts: &[&[A]; PANEL],
    tile: &ActTile,
    mins: bool,
) -> usize {
    let mut n = acts.iter().map(|a| a.len()).fold(weights.len(), usize::min);
    n = n.min(tile.d.len() / PANEL);
    if mins {
        n = n.min(tile.s.len() / PANEL);
    }
    n
}

/// `mins + mw · s[0..8]`: one block's `m · s` terms for the [`PANEL`] tokens.
///
/// # Safety
/// `s` points at 8 readable floats.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn add_mins(mins: __m256, mw: f32, s: *const f32) -> __m256 {
    // SAFETY: by the caller's promise.
    let s = unsafe { _mm256_loadu_ps(s) };
    _mm256_add_ps(mins, _mm256_mul_ps(_mm256_set1_ps(mw), s))
}

/// Each token's output: its accumulator's lanes folded, plus its `m · s` sum.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn finish(acc: [__m256; PANEL], mins: __m256, out: &mut [f32; PANEL]) {
    // SAFETY: writes the `PANEL` = 8 floats of `out`.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(fold_tokens(acc), mins)) };
}

/// Lane `t`: [`fold8`](super::float::fold8) of `acc[t]`, for the eight tokens at once. With `p_j = l_j +
/// l_{j+4}` (one add of the register's halves), `fold8` is `(p0 + p2) + (p1 + p3)`: the
/// halves are added for two tokens per register, `p` reordered to `p0 p2 p1 p3`, and
/// two rounds of pairwise adds (`hadd`) leave the tokens in order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn fold_tokens(acc: [__m256; PANEL]) -> __m256 {
    const { assert!(PANEL == 8, "one token per lane of a 256-bit register") };
    const REORDER: i32 = 0b11_01_10_00;
    let p: [__m256; 4] = std::array::from_fn(|t| {
        let (a, b) = (acc[t], acc[t + 4]);
        let halves = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        );
        _mm256_permute_ps::<REORDER>(halves)
    });
    let pairs = [_mm256_hadd_ps(p[0], p[1]), _mm256_hadd_ps(p[2], p[3])];
    _mm256_hadd_ps(pairs[0], pairs[1])
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    let prep = |x: &BlockQ4_0| {
        (signed(_mm256_sub_epi8(nibbles(&x.qs), _mm256_set1_epi8(8))), f16(x.d), 0.0)
    };
    panel::<_, _, false>(w, tile, out, prep, |l, y: &BlockQ8_0| dot_signed(l, &y.qs));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    let prep = |x: &BlockQ4_1| (unsigned(nibbles(&x.qs)), f16(x.d), f16(x.m));
    panel::<_, _, true>(w, tile, out, prep, |l, y: &BlockQ8_1| dot_u8_i8(l.q, load32i(&y.qs)));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    let prep = |x: &BlockQ5_0| {
        let q = _mm256_or_si256(nibbles(&x.qs), high_bits(x.qh));
        (signed(_mm256_sub_epi8(q, _mm256_set1_epi8(16))), f16(x.d), 0.0)
    };
    panel::<_, _, false>(w, tile, out, prep, |l, y: &BlockQ8_0| dot_signed(l, &y.qs));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    let prep = |x: &BlockQ5_1| {
        (unsigned(_mm256_or_si256(nibbles(&x.qs), high_bits(x.qh))), f16(x.d), f16(x.m))
    };
    panel::<_, _, true>(w, tile, out, prep, |l, y: &BlockQ8_1| dot_u8_i8(l.q, load32i(&y.qs)));
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_body(w: &[u8], tile: &ActTile, out: &mut [f32; PANEL]) {
    let prep = |x: &BlockQ8_0| (signed(load32i(&x.qs)), f16(x.d), 0.0);
    panel::<_, _, false>(w, tile, out, prep, |l, y: &BlockQ8_0| dot_signed(l, &y.qs));
}

/// Declares safe float panel kernels over their `#[target_feature]` bodies; `$width` is
/// the bytes per weight.
macro_rules! checked_float_panel {
    ($($name:ident => $width:expr, $load:ident, $decode:ident;)*) => {$(
        pub(super) fn $name(rows: [&[u8]; ROWS], xs: &[&[f32]; TOKENS], out: &mut FloatOut) {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn body(rows: [&[u8]; ROWS], xs: &[&[f32]; TOKENS], out: &mut FloatOut) {
                let n = rows.iter().map(|w| w.len() / $width);
                let n = xs.iter().map(|x| x.len()).chain(n).fold(usize::MAX, usize::min);
                // SAFETY: `float_panel` loads eight weights from `at` only where
                // `at + 8 <= n <= w.len() / width`.
                let load = |r: usize, at: usize| unsafe { $load(rows[r], at) };
                float_panel(n, xs, out, load, |r, j| $decode(rows[r], j));
            }
            // SAFETY: only reachable through `avx2::kernels()`, after the CPU features
            // are checked.
            unsafe { body(rows, xs, out) }
        }
    )*};
}

checked_float_panel! {
    panel_f32 => 4, load_f32, decode_f32;
    panel_f16 => 2, load_f16, decode_f16;
    panel_bf16 => 2, load_bf16, decode_bf16;
}

const ROWS: usize = FLOAT_ROWS;
const TOKENS: usize = FLOAT_TOKENS;
type FloatOut = [[f32; TOKENS]; ROWS];

/// The panel over the first `n` elements (`n` at most every row's length): for each of
/// the one-token kernel's four lane vectors, one walk down the rows adding that vector's
/// elements for every row and token; then each product's tail and fold as the one-token
/// kernel's. `load(r, at)` gives row `r`'s eight weights from `at`, `decode(r, j)` one.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn float_panel(
    n: usize,
    xs: &[&[f32]; TOKENS],
    out: &mut FloatOut,
    load: impl Fn(usize, usize) -> __m256,
    decode: impl Fn(usize, usize) -> f32,
) {
    let full = n / LANES * LANES;
    let mut lanes = [[[0f32; LANES]; TOKENS]; ROWS];
    for v in 0..LANES / 8 {
        let mut acc = [[_mm256_setzero_ps(); TOKENS]; ROWS];
        let mut at = 8 * v;
        while at < full {
            // SAFETY: `at + 8 <= full <= n <= x.len()` for every token.
            let x: [__m256; TOKENS] =
                std::array::from_fn(|t| unsafe { _mm256_loadu_ps(xs[t].as_ptr().add(at)) });
            for (r, acc) in acc.iter_mut().enumerate() {
                let wv = load(r, at);
                for (a, &xv) in acc.iter_mut().zip(&x) {
                    *a = _mm256_fmadd_ps(wv, xv, *a);
                }
            }
            at += LANES;
        }
        for (lanes, acc) in lanes.iter_mut().zip(acc) {
            for (l, a) in lanes.iter_mut().zip(acc) {
                // SAFETY: writes 8 floats at `8v`, inside the 32-float array.
                unsafe { _mm256_storeu_ps(l.as_mut_ptr().add(8 * v), a) };
            }
        }
    }
    for (r, (out, lanes)) in out.iter_mut().zip(&mut lanes).enumerate() {
        for ((o, l), x) in out.iter_mut().zip(lanes).zip(xs) {
            for (j, &v) in (full..n).zip(x.get(full..n).unwrap_or_default()) {
                l[j % LANES] = decode(r, j).mul_add(v, l[j % LANES]);
            }
            *o = fold(l);
        }
    }
}
