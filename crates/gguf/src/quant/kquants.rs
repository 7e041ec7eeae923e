//! The 256-element K-quant super-blocks — Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, and Q8_K for
//! activations — ported from ggml's reference quantizers so the bytes are identical.
//!
//! Layouts (little-endian; `d`, `dmin` f16 unless noted):
//! - Q2_K (84): `scales[16] qs[64] d dmin`, a 4-bit scale and min per 16 elements.
//! - Q3_K (110): `hmask[32] qs[64] scales[12] d`, 6-bit scales per 16, 3-bit quants.
//! - Q4_K (144): `d dmin scales[12] qs[128]`, 6-bit scale and min per 32.
//! - Q5_K (176): `d dmin scales[12] qh[32] qs[128]`.
//! - Q6_K (210): `ql[128] qh[64] scales[16] (i8) d`.
//! - Q8_K (292): `d (f32) qs[256] (i8) bsums[16] (i16)`.

use super::common::{
    GROUP_MAX_EPS, Search, f16_at, f16_bytes, make_q3_quants, make_qkx2_quants, make_qx_quants,
    nearest_int,
};
use crate::ggml_type::QK_K;

/// Packs 2-bit levels: `qs[32h + l]` holds elements `128h + l + 32k` at bits `2k`.
#[inline(always)]
fn pack_2bit(l: &[u8], qs: &mut [u8]) {
    for h in 0..QK_K / 128 {
        for i in 0..32 {
            let e = 128 * h + i;
            qs[32 * h + i] = l[e] | (l[e + 32] << 2) | (l[e + 64] << 4) | (l[e + 96] << 6);
        }
    }
}

/// The 2-bit level of element `e` from packed `qs`.
fn unpack_2bit(qs: &[u8], e: usize) -> u8 {
    let (h, r) = (e / 128, e % 128);
    (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3
}

#[inline(always)]
pub fn quantize_q2_k(x: &[f32], out: &mut [u8]) {
    let search = Search { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
    let mut l = [0u8; QK_K];
    let mut aux = [0u8; 16];
    let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        let group = &x[16 * j..16 * j + 16];
        let mut weights = [0f32; 16];
        for (w, v) in weights.iter_mut().zip(group) {
            *w = v.abs();
        }
        (scales[j], mins[j]) =
            make_qkx2_quants(&search, group, &weights, &mut l[16 * j..16 * j + 16], &mut aux);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let (sc, rest) = out.split_at_mut(16);
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        rest[64..66].copy_from_slice(&f16_bytes(max_scale / 15.0));
    } else {
        sc.fill(0);
        rest[64..66].copy_from_slice(&f16_bytes(0.0));
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        rest[66..68].copy_from_slice(&f16_bytes(max_min / 15.0));
    } else {
        rest[66..68].copy_from_slice(&f16_bytes(0.0));
    }
    let (d_all, m_all) = (f16_at(rest, 64), f16_at(rest, 66));
    for j in 0..16 {
        let d = d_all * f32::from(sc[j] & 0x0F);
        if d == 0.0 {
            continue;
        }
        let dm = m_all * f32::from(sc[j] >> 4);
        for i in 0..16 {
            l[16 * j + i] = nearest_int((x[16 * j + i] + dm) / d).clamp(0, 3) as u8;
        }
    }
    pack_2bit(&l, &mut rest[..64]);
}

pub fn dequantize_q2_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 80), f16_at(b, 82));
    for (e, v) in y.iter_mut().enumerate().take(QK_K) {
        let sc = b[e / 16];
        let q = unpack_2bit(&b[16..80], e);
        *v = d * f32::from(sc & 0x0F) * f32::from(q) - min * f32::from(sc >> 4);
    }
}

/// The 6-bit scale of group `j` of a Q3_K block, unbiased to `[-32, 31]`.
#[inline(always)]
fn q3_scale(scales: &[u8], j: usize) -> i32 {
    let low = if j < 8 { scales[j] & 0x0F } else { scales[j - 8] >> 4 };
    let high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    i32::from(low | (high << 4)) - 32
}

#[inline(always)]
pub fn quantize_q3_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    let (hmask, rest) = out.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, d_bytes) = rest.split_at_mut(12);
    sc.fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..16 {
            let level = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
            let level = level as u8;
            if j < 8 {
                sc[j] = level & 0x0F;
            } else {
                sc[j - 8] |= (level & 0x0F) << 4;
            }
            sc[8 + j % 4] |= (level >> 4) << (2 * (j / 4));
        }
        d_bytes.copy_from_slice(&f16_bytes(1.0 / iscale));
    } else {
        d_bytes.copy_from_slice(&f16_bytes(0.0));
    }
    let d_all = f16_at(d_bytes, 0);
    for j in 0..16 {
        let d = d_all * q3_scale(sc, j) as f32;
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    hmask.fill(0);
    let mut levels = [0u8; QK_K];
    for (e, level) in levels.iter_mut().enumerate() {
        let mut q = l[e] as u8;
        if q > 3 {
            hmask[e % 32] |= 1 << (e / 32);
            q -= 4;
        }
        *level = q;
    }
    pack_2bit(&levels, qs);
}

pub fn dequantize_q3_k(b: &[u8], y: &mut [f32]) {
    let d_all = f16_at(b, 108);
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    for (e, v) in y.iter_mut().enumerate().take(QK_K) {
        let high = if hmask[e % 32] & (1 << (e / 32)) != 0 { 0 } else { 4 };
        let q = i32::from(unpack_2bit(qs, e)) - high;
        *v = d_all * q3_scale(sc, e / 16) as f32 * q as f32;
    }
}

/// The 6-bit scale and min of sub-block `j` from the 12 packed bytes of Q4_K / Q5_K.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The 6-bit packing of eight scales and mins into 12 bytes.
#[inline(always)]
fn pack_scales_k4(ls: &[u8; 8], lm: &[u8; 8], q: &mut [u8]) {
    q[..12].fill(0);
    for j in 0..8 {
        if j < 4 {
            q[j] = ls[j];
            q[j + 4] = lm[j];
        } else {
            q[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            q[j - 4] |= (ls[j] >> 4) << 6;
            q[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// The shared part of Q4_K and Q5_K: per 32-element sub-block scale search, 6-bit
/// scales and mins in `head[4..16]`, `d`/`dmin` in `head[..4]`, and the final levels.
#[inline(always)]
fn quantize_k4_levels(x: &[f32], search: &Search, head: &mut [u8], l: &mut [u8; QK_K]) {
    let nmax = search.nmax;
    let mut aux = [0u8; 32];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let group = &x[32 * j..32 * j + 32];
        let sum_x2 = group.iter().fold(0f32, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, v) in weights.iter_mut().zip(group) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) =
            make_qkx2_quants(search, group, &weights, &mut l[32 * j..32 * j + 32], &mut aux);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    head[..2].copy_from_slice(&f16_bytes(max_scale / 63.0));
    head[2..4].copy_from_slice(&f16_bytes(max_min / 63.0));
    pack_scales_k4(&ls, &lm, &mut head[4..16]);
    let (d_all, m_all) = (f16_at(head, 0), f16_at(head, 2));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &head[4..16]);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = m_all * f32::from(m);
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

#[inline(always)]
pub fn quantize_q4_k(x: &[f32], out: &mut [u8]) {
    let search = Search { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
    let mut l = [0u8; QK_K];
    let (head, qs) = out.split_at_mut(16);
    quantize_k4_levels(x, &search, head, &mut l);
    for c in 0..QK_K / 64 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + i + 32] << 4);
        }
    }
}

/// Dequantizes Q4_K (`high` is `None`) or Q5_K (`high` is the 32 `qh` bytes).
fn dequantize_k4(head: &[u8], high: Option<&[u8]>, qs: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(head, 0), f16_at(head, 2));
    for (e, v) in y.iter_mut().enumerate().take(QK_K) {
        let (c, i) = (e / 64, e % 64);
        let byte = qs[32 * c + i % 32];
        let mut q = if i < 32 { byte & 0x0F } else { byte >> 4 };
        if let Some(qh) = high {
            let bit = 2 * c + usize::from(i >= 32);
            q |= ((qh[i % 32] >> bit) & 1) << 4;
        }
        let (sc, m) = scale_min_k4(e / 32, &head[4..16]);
        *v = d * f32::from(sc) * f32::from(q) - min * f32::from(m);
    }
}

pub fn dequantize_q4_k(b: &[u8], y: &mut [f32]) {
    dequantize_k4(&b[..16], None, &b[16..144], y);
}

#[inline(always)]
pub fn quantize_q5_k(x: &[f32], out: &mut [u8]) {
    let search = Search { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };
    let mut l = [0u8; QK_K];
    let (head, rest) = out.split_at_mut(16);
    quantize_k4_levels(x, &search, head, &mut l);
    let (qh, qs) = rest.split_at_mut(32);
    qh.fill(0);
    for c in 0..QK_K / 64 {
        for i in 0..32 {
            let (mut l1, mut l2) = (l[64 * c + i], l[64 * c + i + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[i] |= 1 << (2 * c);
            }
            if l2 > 15 {
                l2 -= 16;
                qh[i] |= 2 << (2 * c);
            }
            qs[32 * c + i] = l1 | (l2 << 4);
        }
    }
}

pub fn dequantize_q5_k(b: &[u8], y: &mut [f32]) {
    dequantize_k4(&b[..16], Some(&b[16..48]), &b[48..176], y);
}

#[inline(always)]
pub fn quantize_q6_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = make_qx_quants(32, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        if scales[j].abs() > max_abs {
            max_abs = scales[j].abs();
            max_scale = scales[j];
        }
    }
    out.fill(0);
    if max_abs < GROUP_MAX_EPS {
        return;
    }
    let (ql, rest) = out.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (sc, d_bytes) = rest.split_at_mut(16);
    let iscale = -128.0 / max_scale;
    d_bytes.copy_from_slice(&f16_bytes(1.0 / iscale));
    for j in 0..16 {
        sc[j] = nearest_int(iscale * scales[j]).min(127) as i8 as u8;
    }
    let d_all = f16_at(d_bytes, 0);
    for j in 0..16 {
        let d = d_all * f32::from(sc[j] as i8);
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for h in 0..QK_K / 128 {
        for i in 0..32 {
            let q = |k: usize| l[128 * h + i + 32 * k] as u8;
            ql[64 * h + i] = (q(0) & 0x0F) | ((q(2) & 0x0F) << 4);
            ql[64 * h + i + 32] = (q(1) & 0x0F) | ((q(3) & 0x0F) << 4);
            qh[32 * h + i] =
                (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}

pub fn dequantize_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
    for (e, v) in y.iter_mut().enumerate().take(QK_K) {
        let (h, r) = (e / 128, e % 128);
        let (k, i) = (r / 32, r % 32);
        let low = ql[64 * h + i + 32 * (k % 2)] >> (4 * (k / 2)) & 0x0F;
        let high = (qh[32 * h + i] >> (2 * k)) & 3;
        let q = i32::from(low | (high << 4)) - 32;
        *v = d * f32::from(sc[e / 16] as i8) * q as f32;
    }
}

#[inline(always)]
pub fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    let (max, amax) = super::common::signed_max(x);
    out.fill(0);
    if amax == 0.0 {
        return;
    }
    let iscale = -127.0 / max;
    let mut qs = [0i8; QK_K];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for (o, q) in out[4..260].iter_mut().zip(qs) {
        *o = q as u8;
    }
    for j in 0..16 {
        let sum: i32 = qs[16 * j..16 * j + 16].iter().map(|&q| i32::from(q)).sum();
        out[260 + 2 * j..262 + 2 * j].copy_from_slice(&(sum as i16).to_le_bytes());
    }
}

pub fn dequantize_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (j, v) in y.iter_mut().enumerate().take(QK_K) {
        *v = d * f32::from(b[4 + j] as i8);
    }
}
