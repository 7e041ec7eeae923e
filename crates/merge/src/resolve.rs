//! Finding an input model on disk: a local folder, else a hub id in the local hub cache
//! (no network), else — with the `hub-download` feature and not offline — a download
//! into that cache.

use std::path::{Path, PathBuf};

use amalgam_tensors::hub;

use crate::error::{MergeError, Result};
use crate::model_ref::{ModelPath, ModelRef};

/// Where models are looked for.
pub struct Resolver<'a> {
    /// The hub cache (`--transformers-cache`, `$HF_HUB_CACHE`, ...).
    pub cache: PathBuf,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Download progress: (file, bytes so far, total).
    pub progress: &'a dyn Fn(&str, u64, Option<u64>),
}

/// A model found on disk.
pub struct Located {
    pub folder: PathBuf,
    /// Whether it came from the hub (so the card links it).
    pub from_hub: bool,
    /// The LoRA adapter folder of a `model+adapter` reference.
    pub adapter: Option<PathBuf>,
}

impl Resolver<'_> {
    /// Locates `model`, downloading it if allowed and needed.
    pub fn locate(&self, model: &ModelRef) -> Result<Located> {
        let mut found = self.locate_path(model, &model.model)?;
        if let Some(lora) = &model.lora {
            found.adapter = Some(self.locate_path(model, lora)?.folder);
        }
        Ok(found)
    }

    /// Locates one side (`which`) of `model`.
    fn locate_path(&self, model: &ModelRef, which: &ModelPath) -> Result<Located> {
        let path = &which.path;
        let local = Path::new(path);
        if local.is_dir() {
            return Ok(Located { folder: local.to_owned(), from_hub: false, adapter: None });
        }
        if local.is_file() {
            if local.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
                return Ok(Located { folder: local.to_owned(), from_hub: false, adapter: None });
            }
            return Err(MergeError::Model {
                model: model.to_string(),
                message: "is a file; a model input must be a Hugging Face model folder, a \
                          .gguf file, or a hub id"
                    .into(),
            });
        }
        if !hub::is_repo_id(path) {
            return Err(MergeError::Model {
                model: model.to_string(),
                message: format!(
                    "no folder {} exists, and it is not a hub id (org/name)",
                    local.display()
                ),
            });
        }
        let revision = which.revision.as_deref();
        if let Some(snapshot) = hub::find_cached(&self.cache, path, revision) {
            return Ok(Located { folder: snapshot, from_hub: true, adapter: None });
        }
        self.download(model, which)
    }

    #[cfg(feature = "hub-download")]
    fn download(&self, model: &ModelRef, which: &ModelPath) -> Result<Located> {
        if self.offline {
            return Err(self.not_found(
                model,
                which,
                "HF_HUB_OFFLINE is set, so nothing is downloaded",
            ));
        }
        let mut options = hub::DownloadOptions::from_env();
        options.progress = self.progress;
        let revision = which.revision.as_deref();
        let folder = hub::download(&self.cache, &which.path, revision, &options)?;
        Ok(Located { folder, from_hub: true, adapter: None })
    }

    #[cfg(not(feature = "hub-download"))]
    fn download(&self, model: &ModelRef, which: &ModelPath) -> Result<Located> {
        Err(self.not_found(model, which, "this amalgam was built without the hub-download feature"))
    }

    /// The error for a model that is neither local nor cached, naming where it looked.
    fn not_found(&self, model: &ModelRef, which: &ModelPath, why: &str) -> MergeError {
        let path = &which.path;
        let revision = which.revision.as_deref().unwrap_or("main");
        MergeError::Model {
            model: model.to_string(),
            message: format!(
                "not found. Looked for a local folder ./{path} and for revision {revision} in \
                 the hub cache at {} (set HF_HUB_CACHE or HF_HOME, or pass \
                 --transformers-cache, to look elsewhere); {why}. Fetch it with \
                 `huggingface-cli download {path} --revision {revision} --include '*.json' \
                 '*.safetensors' 'tokenizer*'` (HF_TOKEN for gated models), or write the path \
                 of a local copy in the config",
                hub::repo_dir(&self.cache, path).display()
            ),
        }
    }
}
