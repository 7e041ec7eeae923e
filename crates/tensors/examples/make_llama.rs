//! Writes a random Llama-shaped model (config.json plus sharded bfloat16 safetensors) with
//! amalgam's own writer, for benchmarks. Defaults give TinyLlama's shape: 22 layers,
//! hidden 2048, about 2.2 GB.
//!
//! `cargo run --release -p amalgam-tensors --example make_llama -- OUT_DIR [--seed N]
//! [--layers N] [--hidden N] [--intermediate N] [--vocab N]`

use std::path::{Path, PathBuf};

use amalgam_tensors::dtype::f32_to_bf16_bits;
use amalgam_tensors::{DType, PositionedFile, TensorSpec, safetensors_layout};

struct Shape {
    layers: usize,
    hidden: usize,
    intermediate: usize,
    vocab: usize,
    heads: usize,
    kv_heads: usize,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out =
        PathBuf::from(args.next().expect("usage: make_llama OUT_DIR [--seed N] [--layers N] ..."));
    let mut seed = 1u64;
    let mut shape = Shape {
        layers: 22,
        hidden: 2048,
        intermediate: 5632,
        vocab: 32000,
        heads: 32,
        kv_heads: 4,
    };
    while let Some(flag) = args.next() {
        let value: usize = args.next().and_then(|v| v.parse().ok()).expect("flags take a number");
        match flag.as_str() {
            "--seed" => seed = value as u64,
            "--layers" => shape.layers = value,
            "--hidden" => shape.hidden = value,
            "--intermediate" => shape.intermediate = value,
            "--vocab" => shape.vocab = value,
            other => panic!("unknown flag {other}"),
        }
    }
    std::fs::create_dir_all(&out).expect("create the output folder");
    write_config(&out, &shape);
    write_weights(&out, &shape, seed);
}

fn tensors(s: &Shape) -> Vec<TensorSpec> {
    let head_dim = s.hidden / s.heads;
    let kv = s.kv_heads * head_dim;
    let spec = |name: String, shape: Vec<usize>| TensorSpec { name, dtype: DType::BF16, shape };
    let mut out = vec![spec("model.embed_tokens.weight".into(), vec![s.vocab, s.hidden])];
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        out.push(spec(format!("{p}.input_layernorm.weight"), vec![s.hidden]));
        out.push(spec(format!("{p}.self_attn.q_proj.weight"), vec![s.hidden, s.hidden]));
        out.push(spec(format!("{p}.self_attn.k_proj.weight"), vec![kv, s.hidden]));
        out.push(spec(format!("{p}.self_attn.v_proj.weight"), vec![kv, s.hidden]));
        out.push(spec(format!("{p}.self_attn.o_proj.weight"), vec![s.hidden, s.hidden]));
        out.push(spec(format!("{p}.post_attention_layernorm.weight"), vec![s.hidden]));
        out.push(spec(format!("{p}.mlp.gate_proj.weight"), vec![s.intermediate, s.hidden]));
        out.push(spec(format!("{p}.mlp.up_proj.weight"), vec![s.intermediate, s.hidden]));
        out.push(spec(format!("{p}.mlp.down_proj.weight"), vec![s.hidden, s.intermediate]));
    }
    out.push(spec("model.norm.weight".into(), vec![s.hidden]));
    out.push(spec("lm_head.weight".into(), vec![s.vocab, s.hidden]));
    out
}

fn write_config(out: &Path, s: &Shape) {
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": s.hidden, "intermediate_size": s.intermediate, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads, "vocab_size": s.vocab,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    });
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config).unwrap())
        .unwrap();
}

/// Writes the tensors in shards of about 1 GB, with an index.
fn write_weights(out: &Path, s: &Shape, seed: u64) {
    let specs = tensors(s);
    let mut shards: Vec<Vec<TensorSpec>> = vec![Vec::new()];
    let mut size = 0;
    for spec in specs {
        if size > 0 && size + spec.byte_len() > 1_000_000_000 {
            shards.push(Vec::new());
            size = 0;
        }
        size += spec.byte_len();
        shards.last_mut().unwrap().push(spec);
    }
    let count = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0;
    let mut rng = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        let writer = PositionedFile::create(
            &out.join(&name),
            safetensors_layout(shard, &[("format", "pt")]),
        )
        .unwrap();
        for (slot, spec) in shard.iter().enumerate() {
            fill(&writer, slot, spec.byte_len(), &mut rng);
            weight_map.insert(spec.name.clone(), serde_json::json!(name));
            total += spec.byte_len();
        }
        writer.finish().unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(out.join("model.safetensors.index.json"), index.to_string()).unwrap();
    println!("wrote {} ({} bytes of weights in {count} shards)", out.display(), total);
}

/// Random bfloat16 values of magnitude below 0.06, from a xorshift generator.
fn fill(writer: &PositionedFile, slot: usize, bytes: usize, rng: &mut u64) {
    let mut buffer = vec![0u8; bytes.min(1 << 22)];
    let mut offset = 0;
    while offset < bytes {
        let n = buffer.len().min(bytes - offset);
        for pair in buffer[..n].chunks_exact_mut(2) {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            let value = (*rng as i32 as f32) * 2f32.powi(-35);
            pair.copy_from_slice(&f32_to_bf16_bits(value).to_le_bytes());
        }
        writer.write_at(slot, offset as u64, &buffer[..n]).unwrap();
        offset += n;
    }
}
