//! Scalar dot products of the 32-element block types with Q8_0 / Q8_1 activations, in the
//! order of llama.cpp's AVX2 kernels: per block, eight exact integer lane sums (lane `l`
//! takes elements `4l..4l + 4`), each added to its float lane as `fma(d_w · d_a, sum,
//! lane)`; the `m_w · s_a` terms of the types with a minimum summed apart; the lanes folded
//! at the end. The AVX2 kernels do the same operations, so both give the same bits.

use amalgam_gguf::blocks::{
    Block, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, as_blocks, f16,
};

use super::float::fold8;

/// Pairs each weight block with its activation block; empty if either is not whole
/// blocks (shapes are checked at load, so that does not happen).
pub fn pairs<'a, W: Block, A: Block>(
    w: &'a [u8],
    a: &'a [u8],
) -> impl Iterator<Item = (&'a W, &'a A)> {
    let w: &[W] = as_blocks(w).unwrap_or_default();
    let a: &[A] = as_blocks(a).unwrap_or_default();
    w.iter().zip(a)
}

/// The eight lane sums of `Σ q[e] · y[e]` over 32 elements.
#[inline(always)]
pub fn lanes32(q: &[i8; 32], y: &[i8; 32]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (e, (&a, &b)) in q.iter().zip(y).enumerate() {
        lanes[e / 4] += i32::from(a) * i32::from(b);
    }
    lanes
}

/// `acc[l] = fma(d, lanes[l], acc[l])`.
#[inline(always)]
pub fn accumulate(acc: &mut [f32; 8], d: f32, lanes: &[i32; 8]) {
    for (a, &l) in acc.iter_mut().zip(lanes) {
        *a = d.mul_add(l as f32, *a);
    }
}

/// The 4-bit values of a block, `offset` subtracted: element `j` and `j + 16` from byte `j`.
#[inline(always)]
fn nibbles(qs: &[u8; 16], offset: i8) -> [i8; 32] {
    let mut q = [0i8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) as i8 - offset;
        q[j + 16] = (qs[j] >> 4) as i8 - offset;
    }
    q
}

/// The 5-bit values of a block (bit 4 of element `j` is bit `j` of `qh`), `offset`
/// subtracted.
#[inline(always)]
fn five_bits(qs: &[u8; 16], qh: [u8; 4], offset: i8) -> [i8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = nibbles(qs, 0);
    for (j, v) in q.iter_mut().enumerate() {
        *v = (*v | (((qh >> j) & 1) << 4) as i8) - offset;
    }
    q
}

/// Runs `block` (per block: the scale product, the eight integer lanes, the mins term)
/// over the blocks: `fma` per float lane, then `fold8(lanes) + sign · Σ mins`.
#[inline(always)]
pub fn lanes_dot<W: Block, A: Block>(
    w: &[u8],
    a: &[u8],
    sign: f32,
    block: impl Fn(&W, &A) -> (f32, [i32; 8], f32),
) -> f32 {
    let (mut acc, mut mins) = ([0f32; 8], 0f32);
    for (x, y) in pairs::<W, A>(w, a) {
        let (d, lanes, m) = block(x, y);
        accumulate(&mut acc, d, &lanes);
        mins += m;
    }
    fold8(&acc) + sign * mins
}

fn dot<W: Block, A: Block>(
    w: &[u8],
    a: &[u8],
    block: impl Fn(&W, &A) -> (f32, [i32; 8], f32),
) -> f32 {
    lanes_dot(w, a, 1.0, block)
}

fn one_q4_0(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ4_0, y: &BlockQ8_0| {
        (f16(x.d) * f16(y.d), lanes32(&nibbles(&x.qs, 8), &y.qs), 0.0)
    })
}

fn one_q4_1(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ4_1, y: &BlockQ8_1| {
        (f16(x.d) * f16(y.d), lanes32(&nibbles(&x.qs, 0), &y.qs), f16(x.m) * f16(y.s))
    })
}

fn one_q5_0(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ5_0, y: &BlockQ8_0| {
        (f16(x.d) * f16(y.d), lanes32(&five_bits(&x.qs, x.qh, 16), &y.qs), 0.0)
    })
}

fn one_q5_1(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ5_1, y: &BlockQ8_1| {
        (f16(x.d) * f16(y.d), lanes32(&five_bits(&x.qs, x.qh, 0), &y.qs), f16(x.m) * f16(y.s))
    })
}

fn one_q8_0(w: &[u8], a: &[u8]) -> f32 {
    dot(w, a, |x: &BlockQ8_0, y: &BlockQ8_0| (f16(x.d) * f16(y.d), lanes32(&x.qs, &y.qs), 0.0))
}

super::row_dots! {
    dot_q4_0 => one_q4_0;
    dot_q4_1 => one_q4_1;
    dot_q5_0 => one_q5_0;
    dot_q5_1 => one_q5_1;
    dot_q8_0 => one_q8_0;
}

super::per_token_panel! {
    panel_q4_0 => one_q4_0;
    panel_q4_1 => one_q4_1;
    panel_q5_0 => one_q5_0;
    panel_q5_1 => one_q5_1;
    panel_q8_0 => one_q8_0;
}
