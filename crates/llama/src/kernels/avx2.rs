//! AVX2 + FMA + F16C dot products: the float rows summed in the scalar kernels' 32 lanes
//! and fold; the quantized rows' eight integer lanes per block by `maddubs`/`madd`, added
//! to eight float lanes by `fma` as the scalar kernels do. Only handed out by [`kernels`] after the CPU has been
//! checked for the features.

use std::arch::x86_64::*;

use amalgam_gguf::blocks::{
    Block, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, as_blocks,
};

use super::float::{LANES, fold, fold8};
use super::{
    ActRow, Gemms, Kernels, Panel, Panels, avx2_k, avx2_k_panel, avx2_panel, avx2_softmax,
};

/// The AVX2 kernels, if this CPU has AVX2, FMA and F16C.
pub fn kernels() -> Option<Kernels> {
    let ok = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    ok.then_some(Kernels {
        name: "avx2",
        f32: dot_f32,
        f16: dot_f16,
        bf16: dot_bf16,
        q4_0: dot_q4_0,
        q4_1: dot_q4_1,
        q5_0: dot_q5_0,
        q5_1: dot_q5_1,
        q8_0: dot_q8_0,
        q2_k: avx2_k::dot_q2_k,
        q3_k: avx2_k::dot_q3_k,
        q4_k: avx2_k::dot_q4_k,
        q5_k: avx2_k::dot_q5_k,
        q6_k: avx2_k::dot_q6_k,
        weighted_f16,
        weighted_f32,
        weighted_many_f16,
        weighted_many_f32,
        softmax: avx2_softmax::softmax,
        panels: Panels {
            f32: Panel::Float(avx2_panel::panel_f32),
            f16: Panel::Float(avx2_panel::panel_f16),
            bf16: Panel::Float(avx2_panel::panel_bf16),
            q4_0: Panel::Quant(avx2_panel::panel_q4_0),
            q4_1: Panel::Quant(avx2_panel::panel_q4_1),
            q5_0: Panel::Quant(avx2_panel::panel_q5_0),
            q5_1: Panel::Quant(avx2_panel::panel_q5_1),
            q8_0: Panel::Quant(avx2_panel::panel_q8_0),
            q2_k: Panel::Quant(avx2_k_panel::panel_q2_k),
            q3_k: Panel::Quant(avx2_k_panel::panel_q3_k),
            q4_k: Panel::Quant(avx2_k_panel::panel_q4_k),
            q5_k: Panel::Quant(avx2_k_panel::panel_q5_k),
            q6_k: Panel::Quant(avx2_k_panel::panel_q6_k),
        },
        gemms: Gemms::default(),
    })
}

/// How far ahead of the block being read the kernels ask for weights: a hint, measured
/// (SmolLM2 Q4_1 decode on one thread: 52 tokens/s at 1 KiB, 73 at 2 KiB, 74 at 4 KiB).
pub(super) const PREFETCH_AHEAD: usize = 2048;

/// Declares a safe kernel that calls its `#[target_feature]` body.
macro_rules! checked {
    ($(fn $name:ident($a:ident: $ta:ty, $b:ident: $tb:ty) => $body:ident;)*) => {$(
        pub(super) fn $name($a: $ta, $b: $tb) -> f32 {
            // SAFETY: these kernels are only reachable through `kernels()`, which returns
            // them only when the CPU has AVX2, FMA and F16C.
            unsafe { $body($a, $b) }
        }
    )*};
}

checked! {
    fn dot_f32(w: &[u8], x: &[f32]) => f32_body;
    fn dot_f16(w: &[u8], x: &[f32]) => f16_body;
    fn dot_bf16(w: &[u8], x: &[f32]) => bf16_body;
}

/// Declares safe quantized dot products that call their `#[target_feature]` bodies.
macro_rules! checked_quant {
    ($($name:ident => $body:ident;)*) => {$(
        pub(super) fn $name(w: &[u8], a: super::ActRow) -> f32 {
            // SAFETY: these kernels are only reachable through `kernels()`, which returns
            // them only when the CPU has AVX2, FMA and F16C.
            unsafe { $body(w, a) }
        }
    )*};
}
pub(super) use checked_quant;

checked_quant! {
    dot_q4_0 => q4_0_body;
    dot_q4_1 => q4_1_body;
    dot_q5_0 => q5_0_body;
    dot_q5_1 => q5_1_body;
    dot_q8_0 => q8_0_body;
}

pub(super) fn weighted_f16(weights: &[f32], rows: &[u8], stride: usize, out: &mut [f32]) {
    // SAFETY: only reachable through `kernels()`, after the CPU features are checked.
    unsafe { weighted_body(weights, rows, stride, out, 2) }
}

pub(super) fn weighted_f32(weights: &[f32], rows: &[u8], stride: usize, out: &mut [f32]) {
    // SAFETY: as `weighted_f16`.
    unsafe { weighted_body(weights, rows, stride, out, 4) }
}

/// Eight stored floats (`width` bytes each) from byte `at` of `rows`, widened.
///
/// # Safety
/// `at + 8 · width <= rows.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_width(rows: &[u8], at: usize, width: usize) -> __m256 {
    // SAFETY: in bounds by the caller's promise.
    unsafe {
        if width == 2 {
            _mm256_cvtph_ps(_mm_loadu_si128(rows.as_ptr().add(at).cast()))
        } else {
            _mm256_loadu_ps(rows.as_ptr().add(at).cast())
        }
    }
}

fn weighted_many_f16(weights: &[&[f32]], rows: &[u8], stride: usize, outs: &mut [&mut [f32]]) {
    super::float::one_at_a_time(weighted_f16, weights, rows, stride, outs);
}

fn weighted_many_f32(weights: &[&[f32]], rows: &[u8], stride: usize, outs: &mut [&mut [f32]]) {
    super::float::one_at_a_time(weighted_f32, weights, rows, stride, outs);
}

/// [`super::WeightedSum`]: 64 elements of `out` at a time kept in registers while every
/// row adds to them (`fma` per element, rows in order); the tail as the scalar kernel.
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_body(weights: &[f32], rows: &[u8], stride: usize, out: &mut [f32], width: usize) {
    const VECTORS: usize = 8;
    let n = out.len();
    let count = super::float::whole_rows(rows.len(), stride, n * width, weights.len());
    let weights = &weights[..count];
    let (full, vectors) = (n / (8 * VECTORS) * 8 * VECTORS, n / 8 * 8);
    let mut c = 0;
    while c < vectors {
        let m = if c < full { VECTORS } else { 1 };
        let mut acc = [_mm256_setzero_ps(); VECTORS];
        for (k, a) in acc.iter_mut().enumerate().take(m) {
            // SAFETY: `c + 8k + 8 <= vectors <= n = out.len()`.
            *a = unsafe { _mm256_loadu_ps(out.as_ptr().add(c + 8 * k)) };
        }
        for (j, &s) in weights.iter().enumerate() {
            let s = _mm256_set1_ps(s);
            for (k, a) in acc.iter_mut().enumerate().take(m) {
                // SAFETY: row `j < count` holds `n · width` bytes from `j · stride`
                // (`whole_rows`), and `c + 8k + 8 <= n`.
                let x = unsafe { load_width(rows, j * stride + (c + 8 * k) * width, width) };
                *a = _mm256_fmadd_ps(s, x, *a);
            }
        }
        for (k, a) in acc.iter().enumerate().take(m) {
            // SAFETY: as the loads above.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * k), *a) };
        }
        c += 8 * m;
    }
    for (j, &s) in weights.iter().enumerate() {
        for (e, o) in out.iter_mut().enumerate().skip(vectors) {
            let at = j * stride + e * width;
            let x = match rows.get(at..at + width) {
                Some(&[a, b]) => f16([a, b]),
                Some(&[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
                _ => 0.0,
            };
            *o = s.mul_add(x, *o);
        }
    }
}

/// A little-endian f16 as f32 (exact, as the scalar kernels' conversion).
///
/// The half enters its register by `vmovd`, which writes the whole register. Written with
/// intrinsics, LLVM sees that only lane 0 is read and inserts it with `vpinsrw` into
/// whatever register it likes; in the decode loops that was the running sum, which chained
/// every block's scale behind the previous block's `fma` and halved decode speed.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn f16(bytes: [u8; 2]) -> f32 {
    let half: __m128i;
    // SAFETY: `vmovd` from a general register to a vector register touches nothing else.
    unsafe {
        std::arch::asm!(
            "vmovd {x}, {v:e}",
            x = out(xmm_reg) half,
            v = in(reg) u32::from(u16::from_le_bytes(bytes)),
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    _mm_cvtss_f32(_mm_cvtph_ps(half))
}

/// Loads 32 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn load32(bytes: &[u8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of the array (unaligned load).
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// Loads 32 signed bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn load32i(bytes: &[i8; 32]) -> __m256i {
    // SAFETY: as `load32`.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// `Σ u[i] · s[i]` over 32 unsigned bytes (≤ 127 after any sign trick) and signed bytes,
/// as eight i32 lanes (lane `l` covers elements `4l..4l + 4`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// `Σ a[i] · b[i]` over 32 signed bytes (`a` in `[-128, 127]`, `b` in `[-127, 127]`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_i8_i8(a: __m256i, b: __m256i) -> __m256i {
    dot_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
}

/// The 32 nibbles of 16 bytes in element order: low nibbles, then high nibbles.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: reads exactly the 16 bytes of the array.
    let v = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Signed levels stored as `q + 128` (unsigned bytes, as `vpdpbusd` takes them), given
/// their stored form `q + offset`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn plus_128(stored: __m256i, offset: i8) -> __m256i {
    _mm256_add_epi8(stored, _mm256_set1_epi8(i8::MIN.wrapping_sub(offset)))
}

/// Bit 4 (0x10) in byte `j` where bit `j` of `qh` is set.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn high_bits(qh: [u8; 4]) -> __m256i {
    let v = _mm256_set1_epi32(i32::from_le_bytes(qh));
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
    );
    let probe = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    let set = _mm256_cmpeq_epi8(probe, _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn float_body(
    (w, width): (&[u8], usize),
    n: usize,
    x: &[f32],
    load: impl Fn(usize) -> __m256,
    decode: impl Fn(usize) -> f32,
) -> f32 {
    let full = n / LANES * LANES;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < full {
        for line in (0..LANES * width).step_by(64) {
            // A hint only (the address need not be valid): the rows stream from memory.
            let ahead = w.as_ptr().wrapping_add(i * width + line + PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        }
        for (k, a) in acc.iter_mut().enumerate() {
            let at = i + 8 * k;
            // SAFETY: `at + 8 <= full <= x.len()`.
            let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(at)) };
            *a = _mm256_fmadd_ps(load(at), xv, *a);
        }
        i += LANES;
    }
    let mut lanes = [0f32; LANES];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: writes 8 floats at `8k`, inside the 32-float array.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * k), *a) };
    }
    for (j, &v) in x.iter().enumerate().take(n).skip(full) {
        lanes[j % LANES] = decode(j).mul_add(v, lanes[j % LANES]);
    }
    fold(&lanes)
}

/// Eight f32 weights from element `at`.
///
/// # Safety
/// `4 · (at + 8) <= w.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn load_f32(w: &[u8], at: usize) -> __m256 {
    // SAFETY: in bounds by the caller's promise.
    unsafe { _mm256_loadu_ps(w.as_ptr().add(4 * at).cast()) }
}

/// Eight f16 weights from element `at`, widened.
///
/// # Safety
/// `2 · (at + 8) <= w.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn load_f16(w: &[u8], at: usize) -> __m256 {
    // SAFETY: in bounds by the caller's promise.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(w.as_ptr().add(2 * at).cast()) })
}

/// Eight bf16 weights from element `at`, widened.
///
/// # Safety
/// `2 · (at + 8) <= w.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn load_bf16(w: &[u8], at: usize) -> __m256 {
    // SAFETY: in bounds by the caller's promise.
    let h = unsafe { _mm_loadu_si128(w.as_ptr().add(2 * at).cast()) };
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
}

pub(super) fn decode_f32(w: &[u8], j: usize) -> f32 {
    f32::from_le_bytes([w[4 * j], w[4 * j + 1], w[4 * j + 2], w[4 * j + 3]])
}

pub(super) fn decode_f16(w: &[u8], j: usize) -> f32 {
    half::f16::from_le_bytes([w[2 * j], w[2 * j + 1]]).to_f32()
}

pub(super) fn decode_bf16(w: &[u8], j: usize) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([w[2 * j], w[2 * j + 1]])) << 16)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn f32_body(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(w.len() / 4);
    float_body(
        (w, 4),
        n,
        x,
        // SAFETY: `at + 8 <= n`, so 32 bytes from `4 at` are inside `w`.
        |at| unsafe { load_f32(w, at) },
        |j| decode_f32(w, j),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
fn f16_body(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(w.len() / 2);
    float_body(
        (w, 2),
        n,
        x,
        // SAFETY: `at + 8 <= n`, so 16 bytes from `2 at` are inside `w`.
        |at| unsafe { load_f16(w, at) },
        |j| decode_f16(w, j),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
fn bf16_body(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(w.len() / 2);
    float_body(
        (w, 2),
        n,
        x,
        // SAFETY: `at + 8 <= n`, so 16 bytes from `2 at` are inside `w`.
        |at| unsafe { load_bf16(w, at) },
        |j| decode_bf16(w, j),
    )
}

/// The dot product of one weight row with one token's activations: each weight block is
/// decoded by `prep`; `mul` (given the block and the token's widened `d` and `s`) gives
/// the scale product, the eight integer lanes and the mins term, added as the scalar
/// kernels add them (`fma` per float lane, lanes folded last, `+ sign · Σ mins`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn quant_dot<W: Block, A: Block, P>(
    w: &[u8],
    act: ActRow,
    sign: f32,
    prep: impl Fn(&W) -> P,
    mul: impl Fn(&P, &A, f32, f32) -> (f32, __m256i, f32),
) -> f32 {
    let weights: &[W] = as_blocks(w).unwrap_or_default();
    let blocks: &[A] = as_blocks(act.blocks).unwrap_or_default();
    let (mut acc, mut mins) = (_mm256_setzero_ps(), 0f32);
    let mut step = |x: &W, y: &A, d: f32, s: f32| {
        _mm_prefetch::<_MM_HINT_T0>((x as *const W).cast::<i8>().wrapping_add(PREFETCH_AHEAD));
        let (d, lanes, m) = mul(&prep(x), y, d, s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
        mins += m;
    };
    let pairs = weights.iter().zip(blocks);
    match (act.d.len() == blocks.len(), act.s.len() == blocks.len()) {
        (true, true) => {
            pairs.zip(act.d.iter().zip(act.s)).for_each(|((x, y), (&d, &s))| step(x, y, d, s))
        }
        (true, false) => pairs.zip(act.d).for_each(|((x, y), &d)| step(x, y, d, 0.0)),
        _ => pairs.for_each(|(x, y)| step(x, y, 0.0, 0.0)),
    }
    let mut lanes = [0f32; 8];
    // SAFETY: writes the 8 floats of `lanes`.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    fold8(&lanes) + sign * mins
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_body(w: &[u8], a: ActRow) -> f32 {
    let prep = |x: &BlockQ4_0| (_mm256_sub_epi8(nibbles(&x.qs), _mm256_set1_epi8(8)), f16(x.d));
    quant_dot(w, a, 1.0, prep, |p, y: &BlockQ8_0, d, _| {
        (p.1 * d, dot_i8_i8(p.0, load32i(&y.qs)), 0.0)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_body(w: &[u8], a: ActRow) -> f32 {
    let prep = |x: &BlockQ4_1| (nibbles(&x.qs), f16(x.d), f16(x.m));
    quant_dot(w, a, 1.0, prep, |p, y: &BlockQ8_1, d, s| {
        (p.1 * d, dot_u8_i8(p.0, load32i(&y.qs)), p.2 * s)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_body(w: &[u8], a: ActRow) -> f32 {
    let prep = |x: &BlockQ5_0| {
        let q = _mm256_or_si256(nibbles(&x.qs), high_bits(x.qh));
        (_mm256_sub_epi8(q, _mm256_set1_epi8(16)), f16(x.d))
    };
    quant_dot(w, a, 1.0, prep, |p, y: &BlockQ8_0, d, _| {
        (p.1 * d, dot_i8_i8(p.0, load32i(&y.qs)), 0.0)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1_body(w: &[u8], a: ActRow) -> f32 {
    let prep =
        |x: &BlockQ5_1| (_mm256_or_si256(nibbles(&x.qs), high_bits(x.qh)), f16(x.d), f16(x.m));
    quant_dot(w, a, 1.0, prep, |p, y: &BlockQ8_1, d, s| {
        (p.1 * d, dot_u8_i8(p.0, load32i(&y.qs)), p.2 * s)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_body(w: &[u8], a: ActRow) -> f32 {
    let prep = |x: &BlockQ8_0| (load32i(&x.qs), f16(x.d));
    quant_dot(w, a, 1.0, prep, |p, y: &BlockQ8_0, d, _| {
        (p.1 * d, dot_i8_i8(p.0, load32i(&y.qs)), 0.0)
    })
}
