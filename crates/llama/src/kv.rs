//! A layer's KV cache: keys (after RoPE) and values for every position so far, stored as
//! f16 (rounded to nearest even on store, as llama.cpp's default) or f32, read through
//! the float kernels.

use amalgam_gguf::GgmlType;

use crate::kernels::Kernels;

/// The element type of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

impl KvType {
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

    /// `q · k` for KV head `head` at position `pos`.
    pub fn score(&self, kernels: &Kernels, pos: usize, head: usize, q: &[f32]) -> f32 {
        let k = &self.k[self.range(pos, head)];
        match self.ty {
            KvType::F16 => (kernels.f16)(k, q),
            KvType::F32 => (kernels.f32)(k, q),
        }
    }

    /// `out += a · v` for KV head `head` at position `pos`.
    pub fn add_value(&self, kernels: &Kernels, pos: usize, head: usize, a: f32, out: &mut [f32]) {
        let v = &self.v[self.range(pos, head)];
        match self.ty {
            KvType::F16 => (kernels.axpy_f16)(a, v, out),
            KvType::F32 => (kernels.axpy_f32)(a, v, out),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.k.len() + self.v.len()
    }
}

fn write(ty: KvType, x: &[f32], out: &mut [u8]) {
    let g = match ty {
        KvType::F16 => GgmlType::F16,
        KvType::F32 => GgmlType::F32,
    };
    amalgam_gguf::quant::quantize(g, x, out);
}
