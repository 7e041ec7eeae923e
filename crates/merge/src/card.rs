//! The model card: a `README.md` with Hugging Face front matter (base models, library,
//! license, tags) and sections for the method, the models, the layer layout, the exact
//! YAML and a usage snippet.

use std::fmt::Write as _;

use crate::config::MergeConfig;
use crate::model_ref::ModelRef;
use crate::plan::Plan;

/// What the card says about one input model.
pub struct CardModel {
    pub model: ModelRef,
    /// Whether it is a hub repository (linked, and listed as a base model).
    pub on_hub: bool,
    /// The `license:` of the model's own card, if it has one.
    pub license: Option<String>,
}

/// The library a card is written for: its front matter's `library_name` and its usage
/// section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Library<'a> {
    /// Safetensors for transformers (and amalgam).
    Transformers,
    /// A quantized MLX folder for mlx_lm; `quantization` says how, in a few words.
    Mlx { quantization: &'a str },
}

/// Everything the card needs.
pub struct CardInput<'a> {
    pub name: &'a str,
    pub config: &'a MergeConfig,
    pub config_text: &'a str,
    pub plan: &'a Plan,
    pub models: &'a [CardModel],
    /// The layer count of the donor, for "N layers into M".
    pub source_layers: Option<usize>,
    pub random_seed: u64,
    /// Settings of `config.json` that were changed to follow the new layers.
    pub config_notes: &'a [String],
    /// The "Merge quality" section's measurements (Markdown), if the merge was measured.
    pub quality: Option<&'a str>,
    pub library: Library<'a>,
}

/// Renders the card.
pub fn render(input: &CardInput) -> String {
    let mut out = front_matter(input);
    let name = input.name;
    let _ = writeln!(out, "# {name}\n");
    let _ = writeln!(out, "{}\n", summary(input));
    out += &quality(input);
    out += "## Merge Details\n\n### Merge Method\n\n";
    let base = input.config.base_model.as_ref().filter(|_| input.plan.method.name != "slerp");
    let base_text =
        base.map(|b| format!(" using {} as a base", link(input, b))).unwrap_or_default();
    let _ = writeln!(
        out,
        "This model was merged using the {} merge method{base_text}.\n",
        method_link(input)
    );
    out += "### Models Merged\n\nThe following models were included in the merge:\n";
    for m in input.models.iter().filter(|m| Some(&m.model) != base) {
        let _ = writeln!(out, "* {}", link(input, &m.model));
    }
    out += &layer_table(input);
    if !input.config_notes.is_empty() {
        out += "\n### Config changes\n\nPer-layer settings in `config.json` follow the merged layers:\n\n";
        for note in input.config_notes {
            let _ = writeln!(out, "* {note}");
        }
    }
    out += "\n### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n```yaml\n";
    out += input.config_text.trim_end();
    let _ = writeln!(
        out,
        "\n```\n\nMade with `amalgam merge` (random seed {}), which gives the same tensors as \
         `mergekit-yaml` with this configuration.\n",
        input.random_seed
    );
    out += &match input.library {
        Library::Transformers => usage(name),
        Library::Mlx { quantization } => {
            format!("It is stored for MLX: {quantization}.\n\n{}", mlx_usage(name))
        }
    };
    out
}

fn front_matter(input: &CardInput) -> String {
    let mut out = String::from("---\n");
    let mut bases: Vec<&str> = Vec::new();
    for m in input.models.iter().filter(|m| m.on_hub) {
        if !bases.contains(&m.model.model.path.as_str()) {
            bases.push(&m.model.model.path);
        }
    }
    if !bases.is_empty() {
        out += "base_model:\n";
        for b in bases {
            let _ = writeln!(out, "- {b}");
        }
    }
    out += match input.library {
        Library::Transformers => "library_name: transformers\n",
        Library::Mlx { .. } => "library_name: mlx\n",
    };
    if let Some(license) = input.models.iter().find_map(|m| m.license.as_deref()) {
        let _ = writeln!(out, "license: {license}");
    }
    out += "tags:\n- merge\n- mergekit\n- amalgam\n";
    if let Library::Mlx { .. } = input.library {
        out += "- mlx\n";
    }
    out += "---\n\n";
    out
}

/// The opening sentence: a self-merge reads differently from a blend of models.
fn summary(input: &CardInput) -> String {
    let name = input.name;
    let amalgam = "[amalgam](https://github.com/amalgam-llm/amalgam)";
    let mut licenses: Vec<&str> =
        input.models.iter().filter_map(|m| m.license.as_deref()).collect();
    licenses.dedup();
    let license_note = if licenses.len() > 1 {
        " The merged models have different licenses; check each before use."
    } else {
        ""
    };
    match (input.models, input.plan.out_layers, input.source_layers) {
        ([only], Some(out), Some(source)) => format!(
            "{name} is a {} self-merge: {source} layers stacked into {out} with the {} method, made \
             with {amalgam}.{license_note}",
            link(input, &only.model),
            input.plan.method.pretty_name
        ),
        _ => format!(
            "{name} is a merge of pre-trained language models made with {amalgam}.{license_note}"
        ),
    }
}

/// "Merge quality": what the merge measured, and the search line of a config `amalgam
/// search` wrote; empty when there is neither.
fn quality(input: &CardInput) -> String {
    let search = crate::quality::search_note(input.config_text);
    if input.quality.is_none() && search.is_none() {
        return String::new();
    }
    let mut out = String::from("## Merge quality\n\n");
    if let Some(measured) = input.quality {
        let _ = writeln!(out, "{}\n", measured.trim_end());
    }
    if let Some(search) = search {
        out += "The layout was found by `amalgam search`, which reported:\n\n";
        for line in search.lines() {
            let _ = writeln!(out, "> {line}  ");
        }
        out += "\n";
    }
    out
}

/// For slice configs, which input layers make up which output layers.
fn layer_table(input: &CardInput) -> String {
    if input.config.from_models {
        return String::new();
    }
    let mut out = String::from("\n### Layers\n\n| output layers | taken from |\n|---|---|\n");
    let mut next = 0;
    for slice in &input.config.slices {
        let (start, end) = slice.sources[0].layer_range.unwrap_or_default();
        let sources: Vec<String> = slice
            .sources
            .iter()
            .map(|s| {
                let (a, b) = s.layer_range.unwrap_or_default();
                format!("{} layers {a}–{}", s.model, b.saturating_sub(1))
            })
            .collect();
        if end > start {
            let _ = writeln!(out, "| {next}–{} | {} |", next + end - start - 1, sources.join("; "));
        }
        next += end - start;
    }
    out
}

fn method_link(input: &CardInput) -> String {
    let m = input.plan.method;
    match m.reference_url {
        Some(url) => format!("[{}]({url})", m.pretty_name),
        None => m.pretty_name.to_owned(),
    }
}

/// A model as markdown: linked to the hub when it is a hub repository.
fn link(input: &CardInput, model: &ModelRef) -> String {
    let on_hub = input.models.iter().any(|m| &m.model == model && m.on_hub);
    let path = &model.model.path;
    if on_hub { format!("[{path}](https://huggingface.co/{path})") } else { path.clone() }
}

fn usage(name: &str) -> String {
    format!(
        "## Usage\n\n```python\n!pip install -qU transformers accelerate\n\n\
         from transformers import AutoTokenizer\nimport transformers\nimport torch\n\n\
         model = \"{name}\"\nmessages = [{{\"role\": \"user\", \"content\": \"What is a large language model?\"}}]\n\n\
         tokenizer = AutoTokenizer.from_pretrained(model)\n\
         prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)\n\
         pipeline = transformers.pipeline(\n    \"text-generation\",\n    model=model,\n    \
         torch_dtype=torch.float16,\n    device_map=\"auto\",\n)\n\n\
         outputs = pipeline(prompt, max_new_tokens=256, do_sample=True, temperature=0.7, top_k=50, top_p=0.95)\n\
         print(outputs[0][\"generated_text\"])\n```\n\n\
         Or on a CPU with amalgam, from this folder (or its GGUF):\n\n```sh\n\
         amalgam chat {name} --temperature 0.7 --top-k 50 --top-p 0.95\n\
         amalgam perplexity {name} -f some-text.txt\n```\n"
    )
}

/// The usage section of an MLX folder's card: mlx_lm's snippet, as mlx-community's cards
/// have it.
pub fn mlx_usage(name: &str) -> String {
    format!(
        "## Use with mlx\n\n```bash\npip install mlx-lm\n```\n\n```python\nfrom mlx_lm import load, generate\n\n\
         model, tokenizer = load(\"{name}\")\n\nprompt = \"hello\"\n\n\
         if tokenizer.chat_template is not None:\n    messages = [{{\"role\": \"user\", \"content\": prompt}}]\n    \
         prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)\n\n\
         response = generate(model, tokenizer, prompt=prompt, verbose=True)\n```\n"
    )
}

/// The `license:` value of a model card's front matter, if any.
pub fn card_license(readme: &str) -> Option<String> {
    let body = readme.strip_prefix("---")?;
    let end = body.find("\n---")?;
    body[..end].lines().find_map(|line| {
        let value = line.strip_prefix("license:")?.trim().trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_from_front_matter() {
        let card =
            "---\nlanguage:\n- en\nlicense: llama3\ntags: [x]\n---\n# Model\nlicense: nope\n";
        assert_eq!(card_license(card), Some("llama3".into()));
        assert_eq!(card_license("# no front matter\nlicense: mit\n"), None);
    }
}
