//! A passthrough plan read as a list of stored layers, so a runner can use the merge
//! without writing it: each output layer is a stored layer of one input model, with the
//! `scale` of each of its tensors; the tensors outside the layers are stored tensors too.

use crate::arch::Architecture;
use crate::config::MergeConfig;
use crate::opened::Opened;

/// A stored tensor of an input model and the factor the merge multiplies it by.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    /// Index into the plan's models.
    pub model: usize,
    /// Its name in that model.
    pub name: String,
    pub scale: Option<f32>,
}

/// One output layer: layer `layer` of model `model`, with `scale`s by name within the
/// layer (`mlp.down_proj.weight`).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredLayer {
    pub model: usize,
    pub layer: usize,
    pub scales: Vec<(String, f32)>,
}

/// The merge as stored tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerList {
    /// The output layers, in order.
    pub layers: Vec<StoredLayer>,
    /// Tensors outside the layers, by output name (`model.embed_tokens.weight`, …).
    pub outer: Vec<(String, StoredTensor)>,
}

impl LayerList {
    /// The stored tensor an outer output tensor is, if the merge has it.
    pub fn outer(&self, name: &str) -> Option<&StoredTensor> {
        self.outer.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Why a config cannot run as a layer list.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NotALayerList(pub String);

/// The layer list of an opened config, or why it computes weights a list cannot name.
pub fn layer_list(config: &MergeConfig, opened: &Opened) -> Result<LayerList, NotALayerList> {
    let plan = &opened.plan;
    let why = |s: String| Err(NotALayerList(s));
    if plan.method.name != "passthrough" {
        return why(format!(
            "merge_method {} computes new weights from its inputs; only passthrough reuses \
             stored ones",
            plan.method.name
        ));
    }
    if config.tokenizer.is_some() {
        return why("its tokenizer section rebuilds the embeddings for a merged vocabulary".into());
    }
    if let Some((m, _)) = plan.models.iter().zip(&opened.located).find(|(_, l)| l.adapter.is_some())
    {
        return why(format!("{m} applies a LoRA adapter, which changes the stored weights"));
    }
    let mut layers: Vec<Option<StoredLayer>> = Vec::new();
    let mut outer = Vec::new();
    for t in &plan.tensors {
        let [input] = t.inputs.as_slice() else {
            return why(format!("{} has {} inputs", t.name, t.inputs.len()));
        };
        let scale =
            if t.passthrough { None } else { input.params.get("scale").map(|v| v.as_f64() as f32) };
        match (layer_of(plan.arch, &t.name), layer_of(plan.arch, &input.tensor)) {
            (Some((out, suffix)), Some((layer, from))) if suffix == from => {
                if layers.len() <= out {
                    layers.resize(out + 1, None);
                }
                let slot = layers[out].get_or_insert_with(|| StoredLayer {
                    model: input.model,
                    layer,
                    scales: Vec::new(),
                });
                if (slot.model, slot.layer) != (input.model, layer) {
                    return why(format!(
                        "output layer {out} takes tensors from more than one stored layer"
                    ));
                }
                if let Some(s) = scale {
                    slot.scales.push((suffix.to_owned(), s));
                }
            }
            (None, None) => outer.push((
                t.name.clone(),
                StoredTensor { model: input.model, name: input.tensor.clone(), scale },
            )),
            _ => return why(format!("{} is read from {}", t.name, input.tensor)),
        }
    }
    let layers = layers
        .into_iter()
        .enumerate()
        .map(|(i, l)| l.ok_or_else(|| NotALayerList(format!("output layer {i} has no tensors"))))
        .collect::<Result<_, _>>()?;
    Ok(LayerList { layers, outer })
}

/// The layer index and the name within the layer of a per-layer tensor name.
fn layer_of<'n>(arch: &Architecture, name: &'n str) -> Option<(usize, &'n str)> {
    arch.layer_weights.iter().find_map(|w| {
        let (prefix, suffix) = w.name.split_once("{layer}")?;
        let index = name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?;
        Some((index, suffix.strip_prefix('.').unwrap_or(suffix)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ARCHITECTURES;

    #[test]
    fn layer_names_split_into_index_and_name() {
        let llama = &ARCHITECTURES[0];
        assert_eq!(
            layer_of(llama, "model.layers.12.mlp.down_proj.weight"),
            Some((12, "mlp.down_proj.weight"))
        );
        assert_eq!(layer_of(llama, "model.layers.x.mlp.down_proj.weight"), None);
        assert_eq!(layer_of(llama, "model.embed_tokens.weight"), None);
    }
}
