//! The seed recipe — Meta-Llama-3-120B-Instruct's passthrough self-merge — run verbatim,
//! offline, from a hub cache, against mergekit's tensor hashes.

use std::fs;
use std::path::Path;

use crate::common::*;

const SNAPSHOT: &str = "models--meta-llama--Meta-Llama-3-70B-Instruct/snapshots/7129260dd854a80eb10ace5f61c20324b472b31c";

/// Runs the seed config into `out` with extra flags.
fn merge_seed(out: &Path, extra: &[&str]) {
    run_ok(
        amalgam()
            .env("HF_HUB_CACHE", seed_hub())
            .arg("merge")
            .arg(data().join("seed/seed-120b.yml"))
            .arg(out)
            .arg("--quiet")
            .args(extra),
    );
}

/// Every tensor's dtype, shape and SHA-256 against mergekit's; lists every mismatch.
fn assert_matches_mergekit(out: &Path) {
    let golden = json(&data().join("seed/mergekit-tensors.json"));
    let golden = golden.as_object().unwrap();
    let ours = read_model(out);
    let mut problems = Vec::new();
    for (name, want) in golden {
        match ours.get(name) {
            None => problems.push(format!("{name}: missing")),
            Some((_, t)) => {
                if t.dtype != want["dtype"] || serde_json::json!(t.shape) != want["shape"] {
                    problems.push(format!(
                        "{name}: {} {:?}, mergekit {} {}",
                        t.dtype, t.shape, want["dtype"], want["shape"]
                    ));
                } else if t.sha256() != want["sha256"] {
                    problems.push(format!("{name}: bytes differ"));
                }
            }
        }
    }
    for name in ours.keys().filter(|n| !golden.contains_key(*n)) {
        problems.push(format!("{name}: not in mergekit's output"));
    }
    assert!(problems.is_empty(), "{} mismatches:\n{}", problems.len(), problems.join("\n"));
    assert_eq!(ours.len(), 1263);
}

#[test]
fn seed_recipe_matches_mergekit_tensor_for_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("Meta-Llama-3-120B-Instruct");
    merge_seed(&out, &[]);
    assert_matches_mergekit(&out);

    // config.json: the source's, in its own key style, with 140 layers and float16.
    let source = json(&seed_hub().join(SNAPSHOT).join("config.json"));
    let config = json(&out.join("config.json"));
    assert_eq!(config["num_hidden_layers"], 140);
    assert_eq!(config["torch_dtype"], "float16");
    assert_eq!(config["rope_theta"], source["rope_theta"], "top-level rope_theta stays top-level");
    for (key, value) in source.as_object().unwrap() {
        if key != "num_hidden_layers" && key != "torch_dtype" {
            assert_eq!(&config[key], value, "config key {key}");
        }
    }
    // Meaning agrees with mergekit's own config (written in another key style).
    let theirs = json(&data().join("seed/mergekit-config.json"));
    assert_eq!(config["num_hidden_layers"], theirs["num_hidden_layers"]);
    assert_eq!(config["torch_dtype"], theirs["dtype"]);
    assert_eq!(config["rope_theta"], theirs["rope_parameters"]["rope_theta"]);
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
    ] {
        assert_eq!(config[key], theirs[key], "{key}");
    }

    // Tokenizer and generation config copied byte for byte.
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        let a = fs::read(seed_hub().join(SNAPSHOT).join(file)).unwrap();
        let b = fs::read(out.join(file)).unwrap();
        assert_eq!(a, b, "{file}");
    }

    // The config verbatim, and a card with hub front matter.
    let yml = fs::read_to_string(data().join("seed/seed-120b.yml")).unwrap();
    assert_eq!(fs::read_to_string(out.join("mergekit_config.yml")).unwrap(), yml);
    let card = fs::read_to_string(out.join("README.md")).unwrap();
    let front = card.split("---\n").nth(1).unwrap();
    assert!(front.contains("base_model:\n- meta-llama/Meta-Llama-3-70B-Instruct\n"), "{front}");
    assert_eq!(front.matches("meta-llama/Meta-Llama-3-70B-Instruct").count(), 1, "deduplicated");
    assert!(front.contains("library_name: transformers\n"));
    assert!(front.contains("tags:\n- merge\n- mergekit\n- amalgam\n"));
    assert!(card.contains("80 layers stacked into 140"), "{card}");
    assert!(card.contains(yml.trim_end()));
    assert!(card.contains("temperature=0.7, top_k=50, top_p=0.95"));
    assert!(card.contains("random seed 0"));
    assert!(
        !tmp.path().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')),
        "no staging left"
    );
}

#[test]
fn sharded_output_has_an_index_and_the_same_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sharded");
    merge_seed(&out, &["--out-shard-size", "4M", "--no-write-model-card", "-j", "2"]);
    let index = json(&out.join("model.safetensors.index.json"));
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), 1263);
    let mut files: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
    files.sort();
    files.dedup();
    assert!(files.len() >= 3, "{files:?}");
    let last = format!("model-{0:05}-of-{0:05}.safetensors", files.len());
    assert_eq!(map["model.norm.weight"], last.as_str(), "post-layer weights are written last");
    assert_eq!(index["metadata"]["total_size"], sizes(&out));
    assert!(!out.join("README.md").exists());
    assert_matches_mergekit(&out);
}

/// Bytes of tensor data in all shards.
fn sizes(out: &Path) -> u64 {
    read_model(out).values().map(|(_, t)| t.bytes.len() as u64).sum()
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("planned");
    let output = run_ok(
        amalgam()
            .env("HF_HUB_CACHE", seed_hub())
            .args(["merge", "--dry-run"])
            .arg(data().join("seed/seed-120b.yml"))
            .arg(&out),
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("layers   140"), "{text}");
    assert!(text.contains("tensors  1263"), "{text}");
    assert!(text.contains("shard    model.safetensors  1263 tensors"), "{text}");
    assert!(!out.exists());
}
