//! A layer map: which stored tensors make up the model that runs — for each output layer,
//! a stored layer of one of several sources, with a factor per tensor — so a passthrough
//! merge runs without being written. Repeated layers share their weights; the session
//! gives every output layer its own KV cache.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Layer, Loader, Model, load_layer};
use crate::source::TensorSource;

/// A stored tensor: the source it is in, its Hugging Face name, and the factor its use is
/// multiplied by (1: as stored).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub source: usize,
    pub name: String,
    pub scale: f32,
}

/// One output layer: stored layer `layer` of source `source`; `scales` multiplies the
/// tensors named within the layer (`mlp.down_proj.weight`, …); unnamed ones are as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRef {
    pub source: usize,
    pub layer: usize,
    pub scales: Vec<(String, f32)>,
}

/// The whole map: embeddings, the output layers in order, the final norm and the output
/// matrix (`None`: the embeddings, as a tied model uses them).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerMap {
    pub embed: TensorRef,
    pub layers: Vec<LayerRef>,
    pub norm: TensorRef,
    pub output: Option<TensorRef>,
}

impl LayerMap {
    /// Source 0's own `layers` layers, in order, unscaled.
    pub fn identity(layers: usize) -> LayerMap {
        let plain = |name: &str| TensorRef { source: 0, name: name.to_owned(), scale: 1.0 };
        LayerMap {
            embed: plain("model.embed_tokens.weight"),
            layers: (0..layers)
                .map(|layer| LayerRef { source: 0, layer, scales: Vec::new() })
                .collect(),
            norm: plain("model.norm.weight"),
            output: Some(plain("lm_head.weight")),
        }
    }

    /// How many distinct stored layers the map runs.
    pub fn distinct_layers(&self) -> usize {
        let mut seen: Vec<(usize, usize)> =
            self.layers.iter().map(|l| (l.source, l.layer)).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }
}

impl<'a> Model<'a> {
    /// Every layer of `source`, in order. `config` is the source's, possibly with
    /// overrides (RoPE theta) applied.
    pub fn load(source: &'a dyn TensorSource, config: Config) -> Result<Model<'a>> {
        let map = LayerMap::identity(config.layers);
        Model::from_map(&[source], config, &map)
    }

    /// The model `map` describes over `sources`. `config` is the first source's (with any
    /// overrides); every other source must have the same shape. Each layer keeps its own
    /// source's sliding window and RoPE row layout.
    pub fn from_map(
        sources: &[&'a dyn TensorSource],
        config: Config,
        map: &LayerMap,
    ) -> Result<Model<'a>> {
        let configs = source_configs(sources, &config)?;
        let source = |i: usize| -> Result<(&'a dyn TensorSource, &Config)> {
            match (sources.get(i), configs.get(i)) {
                (Some(s), Some(c)) => Ok((*s, c)),
                _ => Err(Error::Invalid(format!(
                    "the layer map names source {i}, but there are {} sources",
                    sources.len()
                ))),
            }
        };
        let mut layers = Vec::with_capacity(map.layers.len());
        for (i, r) in map.layers.iter().enumerate() {
            let (s, c) = source(r.source)?;
            if r.layer >= c.layers {
                return Err(Error::Invalid(format!(
                    "output layer {i} is layer {} of {}, which has {} layers",
                    r.layer,
                    s.path().display(),
                    c.layers
                )));
            }
            let mut layer = load_layer(s, c, r.layer)?;
            for (name, factor) in &r.scales {
                scale_layer(&mut layer, name, *factor).map_err(|reason| Error::Tensor {
                    name: format!("model.layers.{}.{name}", r.layer),
                    reason,
                })?;
            }
            layers.push(layer);
        }
        let loader = |r: &TensorRef| -> Result<Loader<'a>> {
            Ok(Loader::new(source(r.source)?.0, config.arch))
        };
        let mut embed = loader(&map.embed)?.matrix(&map.embed.name, config.vocab, config.hidden)?;
        embed.scale = map.embed.scale;
        let mut output = embed;
        if let Some(r) = map.output.as_ref().filter(|_| !config.tie_embeddings)
            && let Some(mut m) = loader(r)?.maybe_matrix(&r.name, config.vocab, config.hidden)?
        {
            m.scale = r.scale;
            output = m;
        }
        let mut norm = loader(&map.norm)?.vector(&map.norm.name, config.hidden)?;
        crate::ops::scale(&mut norm, map.norm.scale);
        let rope_source = source(map.embed.source)?.0;
        Model::finish(rope_source, config, embed, layers, norm, output)
    }
}

/// Each source's own config, checked to have the shape of `config`.
fn source_configs(sources: &[&dyn TensorSource], config: &Config) -> Result<Vec<Config>> {
    let mut out = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        let c = if i == 0 { config.clone() } else { Config::from_hf(s.config())? };
        let shape = |c: &Config| {
            (c.arch, c.hidden, c.intermediate, c.heads, c.kv_heads, c.head_dim, c.vocab)
        };
        if shape(&c) != shape(config) {
            return Err(Error::Invalid(format!(
                "{} has another shape than {} (architecture, hidden size, MLP size, heads, KV \
                 heads, head size, vocabulary: {:?} against {:?}); a layer map can only join \
                 models of one shape",
                s.path().display(),
                sources[0].path().display(),
                shape(&c),
                shape(config)
            )));
        }
        out.push(c);
    }
    Ok(out)
}

/// Multiplies the use of `name` (a tensor within a layer) by `factor`: a matrix's product
/// is scaled, a vector is scaled in f32.
fn scale_layer(layer: &mut Layer, name: &str, factor: f32) -> Result<(), String> {
    let matrix = match name {
        "self_attn.q_proj.weight" => Some(&mut layer.q),
        "self_attn.k_proj.weight" => Some(&mut layer.k),
        "self_attn.v_proj.weight" => Some(&mut layer.v),
        "self_attn.o_proj.weight" => Some(&mut layer.o),
        "mlp.gate_proj.weight" => Some(&mut layer.gate),
        "mlp.up_proj.weight" => Some(&mut layer.up),
        "mlp.down_proj.weight" => Some(&mut layer.down),
        _ => None,
    };
    if let Some(m) = matrix {
        m.scale *= factor;
        return Ok(());
    }
    let vector = match name {
        "input_layernorm.weight" => Some(&mut layer.attn_norm),
        "post_attention_layernorm.weight" => Some(&mut layer.ffn_norm),
        "self_attn.q_proj.bias" => layer.q_bias.as_mut(),
        "self_attn.k_proj.bias" => layer.k_bias.as_mut(),
        "self_attn.v_proj.bias" => layer.v_bias.as_mut(),
        "self_attn.q_norm.weight" => layer.q_norm.as_mut(),
        "self_attn.k_norm.weight" => layer.k_norm.as_mut(),
        _ => return Err("the engine does not read this tensor, so it cannot scale it".into()),
    };
    crate::ops::scale(vector.ok_or("the layer has no such tensor to scale")?, factor);
    Ok(())
}
