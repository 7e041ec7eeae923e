//! The ggml block layouts as `#[repr(C)]` structs of bytes (alignment 1, so any byte
//! slice of whole blocks can be viewed as blocks): the one definition the inference
//! kernels read. Half-precision fields are little-endian `[u8; 2]`.

use crate::ggml_type::{GgmlType, QK_K};

/// Elements in a legacy (32-element) block.
pub const QK: usize = 32;

/// `d qs[16]`: `q·d`, `q` in `[-8, 7]` stored `+8`; byte `j` holds element `j` (low
/// nibble) and `j + 16` (high nibble).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; QK / 2],
}

/// `d m qs[16]`: `q·d + m`, `q` in `[0, 15]`, nibbles as in Q4_0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; QK / 2],
}

/// `d qh[4] qs[16]`: `q·d`, `q` in `[-16, 15]` stored `+16`; bit 4 of element `j` is bit
/// `j` of `qh` (little-endian u32).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// `d m qh[4] qs[16]`: `q·d + m`, `q` in `[0, 31]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// `d qs[32]`: `q·d`, `q` an `i8`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; QK],
}

/// `d s qs[32]`: `q·d`, with `s = d·Σq` for the Q4_1/Q5_1 dot products.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; QK],
}

/// `scales[16] qs[64] d dmin`: per 16 elements a 4-bit scale (low) and min (high);
/// `qs[32h + l]` holds elements `128h + l + 32k` at bits `2k`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}

/// `hmask[32] qs[64] scales[12] d`: 2-bit low parts packed as Q2_K, the high bit of
/// element `e` in bit `e / 32` of `hmask[e % 32]` (set: +0, clear: −4), 6-bit scales
/// biased by 32.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}

/// `d dmin scales[12] qs[128]`: 6-bit scale and min per 32 elements; `qs[32c + i]` holds
/// element `64c + i` (low nibble) and `64c + 32 + i` (high nibble).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

/// Q4_K plus `qh[32]`: bit `2c` (`2c + 1`) of `qh[i]` is bit 4 of element `64c + i`
/// (`64c + 32 + i`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// `ql[128] qh[64] scales[16] d`: 6-bit quants biased by 32, an `i8` scale per 16.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: [u8; 2],
}

/// `d (f32) qs[256] bsums[16]`: activations for the K-quant dot products; `bsums[j]`
/// is the sum of `qs[16j..16j + 16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K {
    pub d: [u8; 4],
    pub qs: [i8; QK_K],
    pub bsums: [[u8; 2]; QK_K / 16],
}

/// A block type: its ggml type and, through `bytemuck`-free casting, views of bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs made only of `u8`/`i8` arrays (alignment 1, no
/// padding, every bit pattern valid), whose size is their type's `type_size`.
pub unsafe trait Block: Copy + 'static {
    const TYPE: GgmlType;
}

macro_rules! blocks {
    ($($block:ty => $ty:expr),* $(,)?) => {$(
        // SAFETY: byte arrays only; the size is checked against ggml's below.
        unsafe impl Block for $block {
            const TYPE: GgmlType = $ty;
        }
        const _: () = assert!(size_of::<$block>() == $ty.type_size());
        const _: () = assert!(align_of::<$block>() == 1);
    )*};
}

blocks! {
    BlockQ4_0 => GgmlType::Q4_0,
    BlockQ4_1 => GgmlType::Q4_1,
    BlockQ5_0 => GgmlType::Q5_0,
    BlockQ5_1 => GgmlType::Q5_1,
    BlockQ8_0 => GgmlType::Q8_0,
    BlockQ8_1 => GgmlType::Q8_1,
    BlockQ2K => GgmlType::Q2K,
    BlockQ3K => GgmlType::Q3K,
    BlockQ4K => GgmlType::Q4K,
    BlockQ5K => GgmlType::Q5K,
    BlockQ6K => GgmlType::Q6K,
    BlockQ8K => GgmlType::Q8K,
}

/// `bytes` as blocks, or `None` if it is not a whole number of them.
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    let size = size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    // SAFETY: `B` has alignment 1, no padding and no invalid bit patterns (the `Block`
    // contract), and the length is a whole number of blocks.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) })
}

/// Mutable blocks over `bytes`, or `None` if it is not a whole number of them.
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> Option<&mut [B]> {
    let size = size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    // SAFETY: as in `as_blocks`; the borrow is unique.
    Some(unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size)
    })
}

/// A little-endian f16 field as f32.
#[inline(always)]
pub fn f16(bytes: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(bytes).to_f32()
}

/// The 6-bit scale and min of sub-block `j` from the 12 packed bytes of Q4_K / Q5_K.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The 16 scales of a Q3_K block, unbiased to `[-32, 31]`.
#[inline(always)]
pub fn q3k_scales(packed: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { packed[j] & 0x0F } else { packed[j - 8] >> 4 };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (i32::from(low | (high << 4)) - 32) as i8;
    }
    out
}

/// Multiplies every value the blocks of type `ty` in `bytes` decode to by `s`, by
/// multiplying each block's half-precision scales (and mins) and rounding them once to
/// f16; the quants are untouched. Exact for a power of two (unless a scale leaves f16's
/// normal range). `false` for types with no such scales (floats, activation types) or
/// bytes that are not whole blocks.
pub fn rescale(ty: GgmlType, bytes: &mut [u8], s: f32) -> bool {
    fn each<B: Block, const N: usize>(
        bytes: &mut [u8],
        fields: for<'a> fn(&'a mut B) -> [&'a mut [u8; 2]; N],
        s: f32,
    ) -> bool {
        let Some(blocks) = as_blocks_mut::<B>(bytes) else { return false };
        for block in blocks {
            for field in fields(block) {
                *field = half::f16::from_f32(f16(*field) * s).to_le_bytes();
            }
        }
        true
    }
    match ty {
        GgmlType::Q4_0 => each(bytes, |b: &mut BlockQ4_0| [&mut b.d], s),
        GgmlType::Q4_1 => each(bytes, |b: &mut BlockQ4_1| [&mut b.d, &mut b.m], s),
        GgmlType::Q5_0 => each(bytes, |b: &mut BlockQ5_0| [&mut b.d], s),
        GgmlType::Q5_1 => each(bytes, |b: &mut BlockQ5_1| [&mut b.d, &mut b.m], s),
        GgmlType::Q8_0 => each(bytes, |b: &mut BlockQ8_0| [&mut b.d], s),
        GgmlType::Q2K => each(bytes, |b: &mut BlockQ2K| [&mut b.d, &mut b.dmin], s),
        GgmlType::Q3K => each(bytes, |b: &mut BlockQ3K| [&mut b.d], s),
        GgmlType::Q4K => each(bytes, |b: &mut BlockQ4K| [&mut b.d, &mut b.dmin], s),
        GgmlType::Q5K => each(bytes, |b: &mut BlockQ5K| [&mut b.d, &mut b.dmin], s),
        GgmlType::Q6K => each(bytes, |b: &mut BlockQ6K| [&mut b.d], s),
        _ => false,
    }
}
