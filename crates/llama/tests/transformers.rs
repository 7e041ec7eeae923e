//! The engine against transformers (float32 compute, `tests/data/infer`): logits at every
//! prompt position within 1e-4, the same greedy continuation, the same tokenization and
//! chat template rendering — for llama, mistral, qwen2 and qwen3 models, and for a layer
//! list that repeats layers the way the seed's 120B self-merge does.

use std::path::{Path, PathBuf};

use amalgam_llama::forward::Logits;
use amalgam_llama::sampling::argmax;
use amalgam_llama::template::Message;
use amalgam_llama::{Assets, Config, KvType, LayerMap, LayerRef, Model, Session};
use amalgam_tensors::ModelFolder;
use serde_json::Value;

/// The largest |Δlogit| allowed. The issue asks for 1e-4; the engine lands within 6e-6
/// (f32 sums in another order than torch's), and 1e-5 still catches a sliding window off
/// by one position (7.8e-5 on qwen2).
const TOLERANCE: f32 = 1e-5;

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data").join(path)
}

struct Golden {
    json: Value,
}

impl Golden {
    fn read(name: &str) -> Golden {
        let text = std::fs::read_to_string(data(&format!("infer/{name}"))).unwrap();
        Golden { json: serde_json::from_str(&text).unwrap() }
    }

    fn ids(&self, key: &str) -> Vec<u32> {
        self.json[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
    }

    fn floats(v: &Value) -> Vec<f32> {
        v.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
    }
}

/// Runs the golden's prompt and continuation through `model` and compares.
fn check(model: &Model, golden: &Golden, tolerance: f32) {
    let ids = golden.ids("input_ids");
    let mut session = Session::new(model, 256, KvType::F32);
    let logits = session.forward(&ids, Logits::From(0)).unwrap();
    let vocab = model.config.vocab;
    let mut worst = 0f32;
    for (p, (top_ids, top_logits)) in golden.json["top10_ids"]
        .as_array()
        .unwrap()
        .iter()
        .zip(golden.json["top10_logits"].as_array().unwrap())
        .enumerate()
    {
        let row = &logits[p * vocab..(p + 1) * vocab];
        for (id, want) in top_ids.as_array().unwrap().iter().zip(Golden::floats(top_logits)) {
            let got = row[id.as_u64().unwrap() as usize];
            worst = worst.max((got - want).abs());
        }
    }
    let last = &logits[(ids.len() - 1) * vocab..];
    for (got, want) in last.iter().zip(Golden::floats(&golden.json["last_logits"])) {
        worst = worst.max((got - want).abs());
    }
    assert!(worst <= tolerance, "max |Δlogit| {worst} > {tolerance}");
    let mut next = argmax(last);
    let mut greedy = Vec::new();
    for _ in 0..golden.ids("greedy_ids").len() {
        greedy.push(next);
        next = argmax(&session.forward(&[next], Logits::Last).unwrap());
    }
    assert_eq!(greedy, golden.ids("greedy_ids"));
}

fn check_folder(folder: &str, golden: &str) {
    let source = ModelFolder::open(&data(folder)).unwrap();
    let config = Config::from_hf(source.config()).unwrap();
    let model = Model::load(&source, config).unwrap();
    check(&model, &Golden::read(golden), TOLERANCE);
}

#[test]
fn llama_matches_transformers() {
    check_folder("methods/models/base", "tiny-base.json");
}

#[test]
fn llama_with_256_wide_rows_matches_transformers() {
    check_folder("gguf/tiny-kq", "tiny-kq.json");
}

#[test]
fn mistral_with_a_sliding_window_matches_transformers() {
    check_folder("architectures/models/mistral", "arch-mistral.json");
}

#[test]
fn qwen2_with_biases_and_layer_types_matches_transformers() {
    check_folder("architectures/models/qwen2", "arch-qwen2.json");
}

#[test]
fn qwen3_with_qk_norms_matches_transformers() {
    check_folder("architectures/models/qwen3", "arch-qwen3.json");
}

/// The seed recipe's 140 layers as a list over the 80 stored ones: mergekit's float16
/// output of the same stack, run by transformers, is the golden (the bf16 weights it
/// holds convert to float16 exactly but for values below float16's normal range).
#[test]
fn a_repeated_layer_list_matches_the_merged_seed_model() {
    let hub = data("seed/hub/models--meta-llama--Meta-Llama-3-70B-Instruct/snapshots");
    let snapshot = std::fs::read_dir(&hub).unwrap().next().unwrap().unwrap().path();
    let source = ModelFolder::open(&snapshot).unwrap();
    let config = config_of(&source);
    let mut map = LayerMap::identity(0);
    map.layers = (0..7)
        .flat_map(|s| 10 * s..10 * s + 20)
        .map(|layer| LayerRef { source: 0, layer, scales: Vec::new() })
        .collect();
    assert_eq!((map.layers.len(), map.distinct_layers()), (140, 80));
    let model = Model::from_map(&[&source], config, &map).unwrap();
    check(&model, &Golden::read("seed-120b-tiny.json"), TOLERANCE);
    assert_eq!(
        model.weight_bytes(),
        Model::load(&source, config_of(&source)).unwrap().weight_bytes()
    );
}

fn config_of(source: &ModelFolder) -> Config {
    Config::from_hf(source.config()).unwrap()
}

#[test]
fn tokenizer_and_chat_template_render_as_transformers() {
    let root = data("methods/models/base");
    let source = ModelFolder::open(&root).unwrap();
    let assets = Assets::from_folder(&root, source.config()).unwrap();
    let golden = Golden::read("tiny-base.json");
    let messages: Vec<Message> = golden.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let prompt = assets.template.as_ref().unwrap().render(&messages, true).unwrap();
    assert_eq!(prompt, golden.json["prompt"].as_str().unwrap());
    assert_eq!(assets.tokenizer.encode(&prompt, false).unwrap(), golden.ids("input_ids"));
    assert!(assets.stop.contains(&511), "stop ids {:?} lack <|eot_id|>", assets.stop);
}

/// Every position's logits, the tokens fed in batches of `sizes` (cycled).
fn logits_in_batches(model: &Model, tokens: &[u32], sizes: &[usize], kv: KvType) -> Vec<f32> {
    let mut session = Session::new(model, 256, kv);
    let (mut out, mut at) = (Vec::new(), 0);
    for &n in sizes.iter().cycle() {
        if at == tokens.len() {
            break;
        }
        let end = (at + n).min(tokens.len());
        out.extend(session.forward(&tokens[at..end], Logits::From(0)).unwrap());
        at = end;
    }
    out
}

/// A batch gives every position the bits of its tokens fed one at a time, across a
/// sliding window (mistral's 64) and rows wide enough for the vector paths (tiny-kq).
#[test]
fn batches_give_the_bits_of_one_token_at_a_time() {
    for folder in ["architectures/models/mistral", "gguf/tiny-kq"] {
        let source = ModelFolder::open(&data(folder)).unwrap();
        let model = Model::load(&source, Config::from_hf(source.config()).unwrap()).unwrap();
        let vocab = model.config.vocab as u32;
        let tokens: Vec<u32> = (0..150u32).map(|i| (i * 37 + 11) % vocab).collect();
        for kv in [KvType::F16, KvType::F32] {
            let one = logits_in_batches(&model, &tokens, &[1], kv);
            for sizes in [&[150][..], &[40, 70, 3]] {
                let batched = logits_in_batches(&model, &tokens, sizes, kv);
                let same = one.iter().zip(&batched).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same && one.len() == batched.len(), "{folder} {kv:?} batches {sizes:?}");
            }
        }
    }
}
