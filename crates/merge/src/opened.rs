//! A merge config's inputs located, opened and planned, with nothing merged yet: what
//! `amalgam merge` writes from, and what the engine runs a passthrough config from.

use std::path::PathBuf;

use amalgam_tensors::hub;
use serde_json::{Map, Value};

use crate::chat_template;
use crate::config::MergeConfig;
use crate::error::Result;
use crate::plan::{self, Catalog, Plan};
use crate::report::Reporter;
use crate::resolve::{Located, Resolver};
use crate::source::Model;

/// The opened inputs of a config and its plan.
pub struct Opened {
    /// The models in [`Plan::models`] order.
    pub models: Vec<Model>,
    /// Where each was found.
    pub located: Vec<Located>,
    pub plan: Plan,
}

impl Opened {
    /// Locates (downloading if need be, into `cache_dir` or the environment's hub cache)
    /// and opens every model `config` names, and plans the merge; the planner's notes go
    /// to `reporter`.
    pub fn open(
        config: &MergeConfig,
        cache_dir: Option<PathBuf>,
        allow_crimes: bool,
        reporter: &dyn Reporter,
    ) -> Result<Opened> {
        let resolver = Resolver {
            cache: cache_dir.unwrap_or_else(hub::cache_dir),
            offline: hub::offline(),
            progress: &|file, done, total| reporter.download(file, done, total),
        };
        Opened::open_with(config, &resolver, allow_crimes, reporter)
    }

    /// [`Opened::open`] with a given resolver.
    pub(crate) fn open_with(
        config: &MergeConfig,
        resolver: &Resolver,
        allow_crimes: bool,
        reporter: &dyn Reporter,
    ) -> Result<Opened> {
        let models = config.referenced_models();
        let mut located = Vec::with_capacity(models.len());
        let mut opened = Vec::with_capacity(models.len());
        for model in &models {
            let found = resolver.locate(model)?;
            opened.push(match &found.adapter {
                Some(adapter) => Model::open_adapted(&found.folder, adapter)?,
                None => Model::open(&found.folder)?,
            });
            located.push(found);
        }
        let plan = plan::plan(config, &Folders(&opened), allow_crimes)?;
        for note in &plan.notes {
            reporter.warn(note);
        }
        Ok(Opened { models: opened, located, plan })
    }

    /// The model whose `config.json` and tokenizer the output takes.
    pub fn donor(&self) -> &Model {
        &self.models[self.plan.donor]
    }

    /// The config's chat template, resolved against the input models (`auto` votes);
    /// `None` when the config sets none.
    pub fn chat_template(&self, config: &MergeConfig, reporter: &dyn Reporter) -> Option<String> {
        let value = config.chat_template.as_deref()?;
        let template = chat_template::resolve(value, &self.models);
        if template.is_none() {
            reporter
                .warn("chat_template: auto, but no input model has a chat template; none is set");
        }
        template
    }
}

/// The planner's view of the opened models.
struct Folders<'a>(&'a [Model]);

impl Catalog for Folders<'_> {
    fn config(&self, model: usize) -> &Map<String, Value> {
        self.0[model].config()
    }
    fn contains(&self, model: usize, tensor: &str) -> bool {
        self.0[model].contains(tensor)
    }
}
