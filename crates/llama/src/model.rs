//! A model as the forward pass sees it: weight matrices that are views of stored bytes,
//! small vectors (norms, biases) decoded to f32, and a list of layers. A layer is a
//! bundle of views, so a list may name the same stored layer more than once
//! (`layer_map` builds models from these parts).

use amalgam_gguf::{GgmlType, quant};

use crate::config::{Arch, Config};
use crate::error::{Error, Result};
use crate::rope::Rope;
use crate::source::{RawTensor, RopeStyle, TensorSource};

/// A weight matrix: `rows` rows of `cols` elements stored as `ty`, borrowed from a file.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    /// What products with the matrix are multiplied by (1: as stored); a layer map's
    /// per-tensor scale.
    pub scale: f32,
}

impl<'a> Matrix<'a> {
    /// Checks a stored tensor can be multiplied: a type the kernels run and whole rows of
    /// whole blocks.
    pub fn new(name: &str, raw: RawTensor<'a>) -> Result<Matrix<'a>> {
        let bad = |reason: String| Error::Tensor { name: name.to_owned(), reason };
        if matches!(raw.ty, GgmlType::Q8_1 | GgmlType::Q8K) {
            return Err(bad(format!(
                "is stored as {}, which is an activation type, not a weight type",
                raw.ty
            )));
        }
        if !raw.cols.is_multiple_of(raw.ty.block_size()) {
            return Err(bad(format!(
                "rows of {} elements are not whole {} blocks of {}",
                raw.cols,
                raw.ty,
                raw.ty.block_size()
            )));
        }
        let row_bytes = raw.cols / raw.ty.block_size() * raw.ty.type_size();
        if raw.data.len() != row_bytes * raw.rows {
            return Err(bad(format!(
                "holds {} bytes, but {} rows of {} {} elements take {}",
                raw.data.len(),
                raw.rows,
                raw.cols,
                raw.ty,
                row_bytes * raw.rows
            )));
        }
        Ok(Matrix { ty: raw.ty, rows: raw.rows, cols: raw.cols, data: raw.data, scale: 1.0 })
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// The stored bytes of row `r` (`r < rows`).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` decoded to f32 into `out` (`cols` long).
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        quant::dequantize(self.ty, self.row(r), out);
    }

    /// Bytes of the whole matrix.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// One decoder layer's weights.
#[derive(Clone, Debug)]
pub struct Layer<'a> {
    pub attn_norm: Vec<f32>,
    pub q: Matrix<'a>,
    pub k: Matrix<'a>,
    pub v: Matrix<'a>,
    pub o: Matrix<'a>,
    pub q_bias: Option<Vec<f32>>,
    pub k_bias: Option<Vec<f32>>,
    pub v_bias: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of Q and K (qwen3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub gate: Matrix<'a>,
    pub up: Matrix<'a>,
    pub down: Matrix<'a>,
    pub window: Option<usize>,
    pub rope_style: RopeStyle,
}

/// A whole model: embeddings, the layer list, the final norm and the output matrix.
#[derive(Clone, Debug)]
pub struct Model<'a> {
    pub config: Config,
    pub embed: Matrix<'a>,
    pub layers: Vec<Layer<'a>>,
    pub norm: Vec<f32>,
    pub output: Matrix<'a>,
    pub rope: Rope,
}

impl<'a> Model<'a> {
    /// The model of these parts, with RoPE as `rope_source` stores it.
    pub(crate) fn finish(
        rope_source: &dyn TensorSource,
        mut config: Config,
        embed: Matrix<'a>,
        layers: Vec<Layer<'a>>,
        norm: Vec<f32>,
        output: Matrix<'a>,
    ) -> Result<Model<'a>> {
        let rope = Rope::new(&config, rope_source.rope_freqs()?.as_deref())?;
        config.layers = layers.len();
        Ok(Model { config, embed, layers, norm, output, rope })
    }

    /// Bytes of weights the model maps (each stored matrix counted once).
    pub fn weight_bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        let mut add = |m: &Matrix| {
            if seen.insert(m.data.as_ptr() as usize) {
                total += m.bytes();
            }
        };
        add(&self.embed);
        add(&self.output);
        for l in &self.layers {
            for m in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                add(m);
            }
        }
        total
    }
}

/// Loads stored layer `i` of `source`.
pub fn load_layer<'a>(
    source: &'a dyn TensorSource,
    config: &Config,
    i: usize,
) -> Result<Layer<'a>> {
    let l = Loader::new(source, config.arch);
    let p = format!("model.layers.{i}.");
    let (h, q, kv, ff) = (config.hidden, config.q_dim(), config.kv_dim(), config.intermediate);
    let bias = |name: &str, n: usize| -> Result<Option<Vec<f32>>> {
        if config.arch == Arch::Qwen2 {
            l.vector(&format!("{p}self_attn.{name}.bias"), n).map(Some)
        } else {
            l.maybe_vector(&format!("{p}self_attn.{name}.bias"), n)
        }
    };
    let head_norm = |name: &str| -> Result<Option<Vec<f32>>> {
        if config.arch == Arch::Qwen3 {
            l.vector(&format!("{p}self_attn.{name}.weight"), config.head_dim).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(Layer {
        attn_norm: l.vector(&format!("{p}input_layernorm.weight"), h)?,
        q: l.matrix(&format!("{p}self_attn.q_proj.weight"), q, h)?,
        k: l.matrix(&format!("{p}self_attn.k_proj.weight"), kv, h)?,
        v: l.matrix(&format!("{p}self_attn.v_proj.weight"), kv, h)?,
        o: l.matrix(&format!("{p}self_attn.o_proj.weight"), h, q)?,
        q_bias: bias("q_proj", q)?,
        k_bias: bias("k_proj", kv)?,
        v_bias: bias("v_proj", kv)?,
        q_norm: head_norm("q_norm")?,
        k_norm: head_norm("k_norm")?,
        ffn_norm: l.vector(&format!("{p}post_attention_layernorm.weight"), h)?,
        gate: l.matrix(&format!("{p}mlp.gate_proj.weight"), ff, h)?,
        up: l.matrix(&format!("{p}mlp.up_proj.weight"), ff, h)?,
        down: l.matrix(&format!("{p}mlp.down_proj.weight"), h, ff)?,
        window: config.windows.get(i).copied().flatten(),
        rope_style: source.rope_style(),
    })
}

/// Reads tensors of one source with shape checks.
pub(crate) struct Loader<'a> {
    source: &'a dyn TensorSource,
    arch: Arch,
}

impl<'a> Loader<'a> {
    pub(crate) fn new(source: &'a dyn TensorSource, arch: Arch) -> Loader<'a> {
        Loader { source, arch }
    }

    fn missing(&self, name: &str) -> Error {
        Error::MissingTensor { name: name.to_owned(), arch: self.arch.name().to_owned() }
    }

    pub(crate) fn maybe_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Matrix<'a>>> {
        let Some(raw) = self.source.tensor(name)? else { return Ok(None) };
        if raw.dims != 2 || raw.rows != rows || raw.cols != cols {
            return Err(Error::Tensor {
                name: name.to_owned(),
                reason: format!(
                    "has shape [{}, {}]; config.json implies [{rows}, {cols}]",
                    raw.rows, raw.cols
                ),
            });
        }
        Matrix::new(name, raw).map(Some)
    }

    pub(crate) fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix<'a>> {
        self.maybe_matrix(name, rows, cols)?.ok_or_else(|| self.missing(name))
    }

    fn maybe_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        let Some(raw) = self.source.tensor(name)? else { return Ok(None) };
        if raw.dims != 1 || raw.cols != n {
            return Err(Error::Tensor {
                name: name.to_owned(),
                reason: format!("has {} elements; config.json implies {n}", raw.rows * raw.cols),
            });
        }
        let m = Matrix::new(name, raw)?;
        let mut out = vec![0f32; n];
        m.decode_row(0, &mut out);
        Ok(Some(out))
    }

    pub(crate) fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.maybe_vector(name, n)?.ok_or_else(|| self.missing(name))
    }
}
