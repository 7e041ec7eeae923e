//! `generate`, `chat` and `perplexity` end to end: greedy text equal to transformers' on
//! the tiny Llama, llama.cpp's perplexity output format, scripted chats, and each bad
//! input a one-paragraph error, never a panic.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use crate::common::{amalgam, copy_model, data, error_of, json, run_ok, stderr};

fn tiny() -> PathBuf {
    data().join("methods/models/base")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn greedy_chat_generation_is_transformers_continuation() {
    let golden = json(&data().join("infer/tiny-base.json"));
    let out = run_ok(amalgam().arg("generate").arg(tiny()).args([
        "--chat",
        "-p",
        "What is a large language model?",
        "-n",
        "16",
        "--temperature",
        "0",
        "--ignore-eos",
        "--kv-type",
        "f32",
    ]));
    assert_eq!(stdout(&out).strip_suffix('\n').unwrap(), golden["greedy_text"].as_str().unwrap());
    let summary = stderr(&out);
    assert!(summary.contains("generated 16 tokens at"), "{summary}");
    assert!(summary.contains("peak memory"), "{summary}");
}

#[test]
fn the_same_seed_gives_the_same_text_at_any_thread_count() {
    let sample = |threads: &str, seed: &str| {
        let out = run_ok(amalgam().arg("generate").arg(tiny()).args([
            "-p",
            "Hello",
            "-n",
            "24",
            "--temperature",
            "0.9",
            "--top-k",
            "50",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--ignore-eos",
            "-t",
            threads,
        ]));
        stdout(&out)
    };
    let one = sample("1", "7");
    assert_eq!(one, sample("2", "7"));
    assert_ne!(one, sample("1", "8"), "another seed should give another text");
}

#[test]
fn perplexity_prints_llama_cpp_running_figures_and_final_estimate() {
    let out = run_ok(
        amalgam()
            .arg("perplexity")
            .arg(tiny())
            .args(["-c", "64", "-q", "--chunks", "3"])
            .arg("-f")
            .arg("/usr/share/common-licenses/GPL-3"),
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("[1]") && lines[0].contains(",[2]") && lines[0].ends_with(','),
        "{text}"
    );
    assert!(!lines[0].contains("[4]"), "--chunks 3 scores three windows: {text}");
    let last = lines[1];
    assert!(last.starts_with("Final estimate: PPL = ") && last.contains(" +/- "), "{text}");
    let ppl: f64 =
        last["Final estimate: PPL = ".len()..].split(' ').next().unwrap().parse().unwrap();
    // A random model over 512 tokens is near-uniform.
    assert!(ppl > 100.0 && ppl < 5000.0, "{ppl}");
}

#[test]
fn chat_reads_turns_from_piped_stdin() {
    let mut child = amalgam()
        .arg("chat")
        .arg(tiny())
        .args(["--temperature", "0", "-n", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello\nAnd then?\n/reset\nHello\n/exit\nignored\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[0], answers[2], "after /reset the same question gets the same answer");
    assert!(stderr(&out).contains("(new conversation)"));
}

#[test]
fn a_cached_hub_id_runs() {
    let out = run_ok(
        amalgam()
            .env("HF_HUB_CACHE", crate::common::seed_hub())
            .args(["generate", "meta-llama/Meta-Llama-3-70B-Instruct", "--chat", "-p", "hi"])
            .args(["-n", "4", "--temperature", "0", "--ignore-eos"]),
    );
    assert!(stderr(&out).contains("llama 80 layers"), "{}", stderr(&out));
    assert!(stderr(&out).contains("generated 4 tokens"), "{}", stderr(&out));
}

#[test]
fn a_truncated_gguf_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(data().join("gguf/tiny-kq-Q8_0.gguf")).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = error_of(amalgam().arg("generate").arg(&cut).args(["-p", "hi"]));
    assert!(err.contains("cut.gguf"), "{err}");
}

#[test]
fn an_architecture_the_engine_does_not_run_is_named() {
    let err = error_of(
        amalgam().arg("generate").arg(data().join("architectures/models/gemma")).args(["-p", "hi"]),
    );
    assert!(err.contains("\"gemma\"") && err.contains("llama, mistral, qwen2, qwen3"), "{err}");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let err = error_of(amalgam().arg("generate").arg(tiny()).args([
        "-c",
        "8",
        "-p",
        "a prompt that is clearly longer than eight tokens of context",
    ]));
    assert!(err.contains("--ctx-size"), "{err}");
}

#[test]
fn a_template_that_raises_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_model(&tiny(), &model);
    let config_path = model.join("tokenizer_config.json");
    let mut config = json(&config_path);
    config["chat_template"] = "{{ raise_exception('system messages are not supported') }}".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = error_of(amalgam().arg("generate").arg(&model).args(["--chat", "-p", "hi"]));
    assert!(err.contains("the template raised: system messages are not supported"), "{err}");
}

/// A SentencePiece vocabulary (trained by the `sentencepiece` package on GPL-3:
/// `scripts/goldens/spm_vocab.py`) written into a GGUF and rebuilt from its metadata
/// encodes as `sentencepiece` encodes and decodes back to the text.
#[test]
fn a_sentencepiece_gguf_tokenizes_as_sentencepiece() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_model(&tiny(), &model);
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let spm = data().join("sentencepiece");
    std::fs::copy(spm.join("tokenizer.model"), model.join("tokenizer.model")).unwrap();
    let gguf = tmp.path().join("spm.gguf");
    run_ok(amalgam().arg("quantize").arg(&model).arg(&gguf).args(["--quant", "F32", "--quiet"]));
    let gguf = amalgam_gguf::GgufModel::open(&gguf).unwrap();
    let assets = amalgam_llama::Assets::from_gguf(&gguf).unwrap();
    let cases = json(&spm.join("encodings.json"));
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(assets.tokenizer.encode(text, false).unwrap(), want, "{text:?}");
        assert_eq!(assets.tokenizer.decode(&want, true).unwrap(), text, "{text:?}");
    }
    // llama.cpp adds BOS to SentencePiece vocabularies by default.
    let bos = gguf.file().header.get("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64());
    assert_eq!(assets.tokenizer.added_prefix().map(u64::from), bos);
}
