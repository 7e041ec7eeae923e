//! A layer's KV cache: keys (after RoPE) and values for every position so far, stored as
//! f16 (rounded to nearest even on store, as llama.cpp's default) or f32, read through
//! the float kernels.

use std::ops::Range;

use amalgam_gguf::GgmlType;

use crate::kernels::{FLOAT_TOKENS, FloatPanelOf, Kernels, Panel, WIDE_TOKENS};

/// The element type of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

impl KvType {
    /// The stored element type.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            KvType::F16 => GgmlType::F16,
            KvType::F32 => GgmlType::F32,
        }
    }

    /// Bytes per stored value.
    pub fn size(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

/// Keys and values of one layer: `capacity` positions of `width` (= kv heads · head dim).
pub struct KvCache {
    ty: KvType,
    width: usize,
    head_dim: usize,
    k: Vec<u8>,
    v: Vec<u8>,
}

impl KvCache {
    pub fn new(ty: KvType, capacity: usize, width: usize, head_dim: usize) -> KvCache {
        let bytes = capacity * width * ty.size();
        KvCache { ty, width, head_dim, k: vec![0; bytes], v: vec![0; bytes] }
    }

    /// Stores the key and value rows of position `pos`.
    pub fn store(&mut self, pos: usize, k: &[f32], v: &[f32]) {
        let at = pos * self.width * self.ty.size();
        let n = self.width * self.ty.size();
        write(self.ty, k, &mut self.k[at..at + n]);
        write(self.ty, v, &mut self.v[at..at + n]);
    }

    fn range(&self, pos: usize, head: usize) -> std::ops::Range<usize> {
        let at = (pos * self.width + head * self.head_dim) * self.ty.size();
        at..at + self.head_dim * self.ty.size()
    }

    /// `q · k` of each query (`queries`, rows of the head dim) with the keys of KV head
    /// `head` at positions `keys`: `out[i]` gets query `i`'s scores in position order.
    /// Each is the float dot product of the key row and the query, through the panel
    /// kernels (several keys and queries per pass, the same bits).
    pub fn scores(
        &self,
        kernels: &Kernels,
        keys: Range<usize>,
        head: usize,
        queries: &[f32],
        out: &mut [Vec<f32>],
    ) {
        out.iter_mut().for_each(Vec::clear);
        match kernels.panel(self.ty.ggml_type()) {
            Some(Panel::Float(f)) => self.scores_by(f, keys, head, queries, out),
            Some(Panel::Wide(f)) => self.scores_by(f, keys, head, queries, out),
            _ => {
                let dot = if self.ty == KvType::F16 { kernels.f16 } else { kernels.f32 };
                for (q, out) in queries.chunks_exact(self.head_dim).zip(out) {
                    out.extend(keys.clone().map(|j| dot(&self.k[self.range(j, head)], q)));
                }
            }
        }
    }

    /// How many queries [`KvCache::scores`] scores per pass over the keys with these
    /// kernels (a panel's tokens; 1 without a panel).
    pub fn queries_per_pass(&self, kernels: &Kernels) -> usize {
        match kernels.panel(self.ty.ggml_type()) {
            Some(Panel::Float(_)) => FLOAT_TOKENS,
            Some(Panel::Wide(_)) => WIDE_TOKENS,
            _ => 1,
        }
    }

    fn scores_by<const R: usize, const T: usize>(
        &self,
        panel: FloatPanelOf<R, T>,
        keys: Range<usize>,
        head: usize,
        queries: &[f32],
        out: &mut [Vec<f32>],
    ) {
        let hd = self.head_dim;
        let n = out.len().min(queries.len() / hd);
        if n == 0 || keys.is_empty() {
            return;
        }
        let mut res = [[0f32; T]; R];
        for q0 in (0..n).step_by(T) {
            // Past the last query (or key), a tile repeats it.
            let qs: [&[f32]; T] = std::array::from_fn(|t| {
                let q = (q0 + t).min(n - 1);
                &queries[q * hd..(q + 1) * hd]
            });
            for k0 in keys.clone().step_by(R) {
                let rows =
                    std::array::from_fn(|r| &self.k[self.range((k0 + r).min(keys.end - 1), head)]);
                panel(rows, &qs, &mut res);
                for res in res.iter().take(keys.end - k0) {
                    for (out, &s) in out[q0..n].iter_mut().zip(res) {
                        out.push(s);
                    }
                }
            }
        }
    }

    /// `out += Σ_j weights[j] · v_j` over the values of KV head `head` at positions
    /// `keys.start..` (one weight each), adding in position order.
    pub fn add_values(
        &self,
        kernels: &Kernels,
        keys: Range<usize>,
        head: usize,
        weights: &[f32],
        out: &mut [f32],
    ) {
        let start = self.range(keys.start, head).start;
        let rows = self.v.get(start..).unwrap_or_default();
        let stride = self.width * self.ty.size();
        let weights = &weights[..weights.len().min(keys.len())];
        match self.ty {
            KvType::F16 => (kernels.weighted_f16)(weights, rows, stride, out),
            KvType::F32 => (kernels.weighted_f32)(weights, rows, stride, out),
        }
    }

    /// [`KvCache::add_values`] for several outputs over the same positions (`weights[q]`
    /// for `outs[q]`), each with the same bits.
    pub fn add_values_many(
        &self,
        kernels: &Kernels,
        keys: Range<usize>,
        head: usize,
        weights: &[&[f32]],
        outs: &mut [&mut [f32]],
    ) {
        let start = self.range(keys.start, head).start;
        let rows = self.v.get(start..).unwrap_or_default();
        let stride = self.width * self.ty.size();
        match self.ty {
            KvType::F16 => (kernels.weighted_many_f16)(weights, rows, stride, outs),
            KvType::F32 => (kernels.weighted_many_f32)(weights, rows, stride, outs),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.k.len() + self.v.len()
    }
}

fn write(ty: KvType, x: &[f32], out: &mut [u8]) {
    amalgam_gguf::quant::quantize(ty.ggml_type(), x, out);
}
