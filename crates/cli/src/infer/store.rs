//! MODEL opened: a model folder, a GGUF file, a hub id, or a merge config. A passthrough
//! config runs virtually — a layer map over its inputs' stored layers, nothing written —
//! and any other config is merged into memory first.

use std::path::{Path, PathBuf};

use amalgam_gguf::GgufModel;
use amalgam_llama::{Assets, Config, LayerMap, LayerRef, Model, TensorRef, TensorSource};
use amalgam_merge::layer_list::{LayerList, StoredTensor, layer_list};
use amalgam_merge::opened::Opened;
use amalgam_merge::source::Model as Input;
use amalgam_merge::{Diagnostics, MergeConfig, MergeOptions};
use amalgam_tensors::ModelFolder;
use anyhow::{Context, Result, bail};

use crate::progress::Bar;

/// Where a model's weights are, with its tokenizer and chat settings.
pub struct Store {
    /// MODEL as given, for messages.
    path: PathBuf,
    weights: Weights,
    pub assets: Assets,
}

enum Weights {
    Folder(ModelFolder),
    Gguf(Box<GgufModel>),
    /// A passthrough config: its opened inputs and the engine's map of its layers.
    Virtual {
        opened: Box<Opened>,
        map: LayerMap,
        notes: Vec<String>,
    },
}

/// Whether MODEL names a merge config rather than a model.
pub fn is_config(model: &str) -> bool {
    let path = Path::new(model);
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
}

impl Store {
    /// Opens MODEL: a merge config (`.yml`/`.yaml`), a folder, a `.gguf` file, or a hub
    /// id (found as `amalgam merge` finds its inputs).
    pub fn open(model: &str) -> Result<Store> {
        let bar = Bar::new(false);
        if is_config(model) {
            return Store::open_config(Path::new(model), &bar);
        }
        let path = crate::shared::locate(model, &bar)?;
        Store::open_model(&path)
    }

    /// A model folder or GGUF file.
    pub fn open_model(path: &Path) -> Result<Store> {
        let (weights, assets) = if path.is_file() {
            let gguf =
                GgufModel::open(path).with_context(|| format!("opening {}", path.display()))?;
            check_config(&gguf)?;
            let assets = Assets::from_gguf(&gguf)?;
            (Weights::Gguf(Box::new(gguf)), assets)
        } else {
            let folder =
                ModelFolder::open(path).with_context(|| format!("opening {}", path.display()))?;
            check_config(&folder)?;
            let assets = Assets::from_folder(folder.root(), folder.config())?;
            (Weights::Folder(folder), assets)
        };
        Ok(Store { path: path.to_owned(), weights, assets })
    }

    /// A merge config: virtual when it is a passthrough, else merged into memory.
    fn open_config(path: &Path, bar: &Bar) -> Result<Store> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the merge config {}", path.display()))?;
        let mut diagnostics = Diagnostics::new(false);
        let config = MergeConfig::parse(&text, &mut diagnostics)
            .with_context(|| format!("reading the merge config {}", path.display()))?;
        for w in &diagnostics.warnings {
            bar.warn_line(&format!("{}: {w}", path.display()));
        }
        let opened = Opened::open(&config, None, false, bar)?;
        let list = match layer_list(&config, &opened) {
            Ok(list) => list,
            Err(why) => {
                drop(opened);
                return merged_in_memory(path, &text, &why.to_string(), bar);
            }
        };
        for model in &opened.models {
            check_config(input_source(model)?)?;
        }
        let mut assets = input_assets(opened.donor())?;
        if let Some(template) = opened.chat_template(&config, bar) {
            assets.set_template(template);
        }
        let notes = virtual_notes(&config, &list);
        let weights = Weights::Virtual { opened: Box::new(opened), map: layer_map(&list)?, notes };
        Ok(Store { path: path.to_owned(), weights, assets })
    }

    /// MODEL's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text of `file` less one trailing newline, tokenized as llama-perplexity does
    /// (with the tokenizer's BOS, if it adds one).
    pub fn text_tokens(&self, file: &Path) -> Result<Vec<u32>> {
        let mut text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(self.assets.tokenizer.encode(&text, true)?)
    }

    /// Loads the model: its config with `adjust` applied (flag overrides), then the
    /// weights as views, through the layer map for a virtual merge.
    pub fn load(&self, adjust: impl FnOnce(&mut Config)) -> Result<Model<'_>> {
        self.load_with(adjust, None)
    }

    /// [`Store::load`] through `map` (over this model's layers) instead of its own.
    pub fn load_map(&self, adjust: impl FnOnce(&mut Config), map: &LayerMap) -> Result<Model<'_>> {
        if matches!(self.weights, Weights::Virtual { .. }) {
            bail!("{} is a merge config; a layer map needs a model", self.path.display());
        }
        self.load_with(adjust, Some(map))
    }

    fn load_with(
        &self,
        adjust: impl FnOnce(&mut Config),
        over: Option<&LayerMap>,
    ) -> Result<Model<'_>> {
        let context = || format!("loading {}", self.path.display());
        let (sources, map) = match &self.weights {
            Weights::Folder(f) => (vec![f as &dyn TensorSource], None),
            Weights::Gguf(g) => (vec![g.as_ref() as &dyn TensorSource], None),
            Weights::Virtual { opened, map, .. } => {
                let sources = opened.models.iter().map(input_source).collect::<Result<Vec<_>>>()?;
                (sources, Some(map))
            }
        };
        let donor = sources.first().context("the merge config names no model")?;
        let mut config = check_config(*donor)?;
        adjust(&mut config);
        let identity;
        let map = match over.or(map) {
            Some(map) => map,
            None => {
                identity = LayerMap::identity(config.layers);
                &identity
            }
        };
        Model::from_map(&sources, config, map).with_context(context)
    }

    /// What kind of model this is, for the startup line, and the notes to print with it.
    pub fn describe(&self, model: &Model) -> (String, Vec<String>) {
        match &self.weights {
            Weights::Virtual { opened, map, notes } => {
                let kind = format!(
                    "virtual passthrough merge (nothing written): {} layers over {} stored layers \
                     of {}",
                    model.layers.len(),
                    map.distinct_layers(),
                    opened.plan.models.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
                );
                (kind, notes.clone())
            }
            _ => (format!("{} layers", model.layers.len()), Vec::new()),
        }
    }
}

/// The engine's reading of a model's `config.json` (an architecture it does not run is
/// the first thing to say).
fn check_config(source: &dyn TensorSource) -> Result<Config> {
    Config::from_hf(source.config())
        .with_context(|| format!("reading the model at {}", source.path().display()))
}

/// An input model as the engine reads it.
fn input_source(model: &Input) -> Result<&dyn TensorSource> {
    match model {
        Input::Folder(f) => Ok(f),
        Input::Gguf(g) => Ok(g.as_ref()),
        Input::Adapted(..) => bail!("a model with a LoRA adapter cannot run virtually"),
    }
}

/// The tokenizer and settings of the model whose tokenizer a merge takes.
fn input_assets(model: &Input) -> Result<Assets> {
    Ok(match model.unadapted() {
        Input::Folder(f) => Assets::from_folder(f.root(), f.config())?,
        Input::Gguf(g) => Assets::from_gguf(g)?,
        Input::Adapted(..) => bail!("a model with a LoRA adapter cannot run virtually"),
    })
}

/// The engine's layer map of a merge's layer list.
fn layer_map(list: &LayerList) -> Result<LayerMap> {
    let tensor = |t: &StoredTensor| TensorRef {
        source: t.model,
        name: t.name.clone(),
        scale: t.scale.unwrap_or(1.0),
    };
    let outer = |name: &str| {
        list.outer(name).map(tensor).with_context(|| format!("the merge has no {name}"))
    };
    Ok(LayerMap {
        embed: outer("model.embed_tokens.weight")?,
        layers: list
            .layers
            .iter()
            .map(|l| LayerRef { source: l.model, layer: l.layer, scales: l.scales.clone() })
            .collect(),
        norm: outer("model.norm.weight")?,
        output: list.outer("lm_head.weight").map(tensor),
    })
}

/// What a virtual run does differently from the written merge.
fn virtual_notes(config: &MergeConfig, list: &LayerList) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(dtype) = config.out_dtype.or(config.dtype) {
        notes.push(format!(
            "dtype {}: a virtual merge runs the weights as stored; the dtype applies to a \
             written merge",
            dtype
        ));
    }
    let scaled = list.layers.iter().any(|l| !l.scales.is_empty())
        || list.outer.iter().any(|(_, t)| t.scale.is_some());
    if scaled {
        notes.push(
            "scale: each scaled matrix's products are multiplied by the scale (a written \
             merge rounds the scaled weights instead, so the last digits differ)"
                .into(),
        );
    }
    notes
}

/// Merges a config that is not a plain passthrough into memory (a folder in `/dev/shm`,
/// removed once open), after saying why and how much memory that takes.
fn merged_in_memory(path: &Path, text: &str, why: &str, bar: &Bar) -> Result<Store> {
    let label = path.display().to_string();
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() };
    let out = root.join(format!("amalgam-merge-{}", std::process::id()));
    let mut options =
        MergeOptions { strict: false, dry_run: true, ..crate::shared::single_model_options(true) };
    let quiet = Bar::new(true);
    let size = amalgam_merge::run_config(text, &label, &out, &options, &quiet)?.bytes_written;
    check_fits(&label, why, size, amalgam_llama::machine::available_memory())?;
    eprintln!(
        "note: {label} cannot run virtually ({why}); merging it into memory first: {:.0} MiB",
        mib(size)
    );
    options.dry_run = false;
    let merged = amalgam_merge::run_config(text, &label, &out, &options, bar);
    bar.finish();
    merged?;
    let store = Store::open_model(&out);
    // The weights stay mapped after their files are unlinked, so nothing outlives the
    // process.
    let _ = std::fs::remove_dir_all(&out);
    let mut store = store?;
    store.path = path.to_owned();
    Ok(store)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Refuses a merge of `size` bytes that does not fit in the `available` memory.
fn check_fits(label: &str, why: &str, size: u64, available: Option<u64>) -> Result<()> {
    match available {
        Some(available) if size > available => bail!(
            "{label} cannot run virtually ({why}), and merging it into memory takes {:.0} MiB, \
             more than the {:.0} MiB available; write it with `amalgam merge {label} OUT` and \
             run OUT",
            mib(size),
            mib(available)
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_larger_than_memory_is_refused_with_the_way_out() {
        let why = "merge_method linear computes new weights";
        let err = check_fits("big.yml", why, 3 << 30, Some(2 << 30)).unwrap_err().to_string();
        assert!(err.contains("3072 MiB, more than the 2048 MiB available"), "{err}");
        assert!(err.contains("amalgam merge big.yml OUT") && err.contains(why), "{err}");
        assert!(check_fits("small.yml", why, 1 << 30, Some(2 << 30)).is_ok());
        assert!(check_fits("unknown.yml", why, 1 << 30, None).is_ok());
    }
}
