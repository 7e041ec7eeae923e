//! Virtual merges: a passthrough config run as a layer map equals the written merge bit
//! for bit where the merge does no arithmetic (the seed recipe on the tiny model in
//! bfloat16; SmolLM2 Q4_1 merged losslessly to GGUF, also scaled by 0.5), a lossless GGUF
//! passthrough copies every unscaled tensor's blocks and keeps a scaled one's quants, and
//! a scaled product stays within one rounding of the scaled weight.

use std::fs;
use std::path::{Path, PathBuf};

use amalgam_gguf::GgufFile;

use crate::common::*;

/// `amalgam perplexity MODEL` on `text` in windows of 128, with the logits digest:
/// (stdout, stderr).
fn perplexity(model: &Path, text: &Path, hub: Option<&Path>) -> (String, String) {
    let mut cmd = amalgam();
    cmd.arg("perplexity").arg(model).arg("-f").arg(text);
    cmd.args(["-c", "128", "--chunks", "2", "--logits-digest", "-q"]);
    if let Some(hub) = hub {
        cmd.env("HF_HUB_CACHE", hub);
    }
    let out = run_ok(&mut cmd);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("logits digest: "), "{stdout}");
    (stdout, String::from_utf8(out.stderr).unwrap())
}

/// Five overlapping 10-layer slices of `model` (30 → 50 layers), with `extra` appended to
/// the config.
fn smollm2_config(dir: &Path, model: &Path, extra: &str) -> PathBuf {
    let model = serde_json::to_string(&model.display().to_string()).unwrap();
    let mut yaml = String::from("slices:\n");
    for start in [0, 5, 10, 15, 20] {
        yaml +=
            &format!("- sources: [{{model: {model}, layer_range: [{start}, {}]}}]\n", start + 10);
    }
    yaml += "merge_method: passthrough\n";
    yaml += extra;
    let path = dir.join("self-merge.yml");
    fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn the_seed_recipe_runs_virtually_bit_equal_to_its_bf16_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let text = gpl3(tmp.path(), 16384);
    let recipe = fs::read_to_string(data().join("seed/seed-120b.yml")).unwrap();
    let config = tmp.path().join("seed-bf16.yml");
    fs::write(&config, recipe.replace("dtype: float16", "dtype: bfloat16")).unwrap();
    let merged = tmp.path().join("merged");
    run_ok(amalgam().env("HF_HUB_CACHE", seed_hub()).arg("merge").arg(&config).arg(&merged));

    let (virt, log) = perplexity(&config, &text, Some(&seed_hub()));
    assert!(
        log.contains(
            "virtual passthrough merge (nothing written): 140 layers over 80 stored layers"
        ),
        "{log}"
    );
    assert!(
        log.contains("note: dtype bfloat16: a virtual merge runs the weights as stored"),
        "{log}"
    );
    let (written, _) = perplexity(&merged, &text, None);
    assert_eq!(virt, written, "virtual and written merge differ");

    // The recipe as published (float16) rounds the bf16 weights: the digest sees it even
    // where the printed perplexity does not.
    let f16 = tmp.path().join("merged-f16");
    let seed = data().join("seed/seed-120b.yml");
    run_ok(amalgam().env("HF_HUB_CACHE", seed_hub()).arg("merge").arg(&seed).arg(&f16));
    let (rounded, _) = perplexity(&f16, &text, None);
    assert_ne!(virt, rounded, "a float16 merge should not equal the bf16 weights");
}

/// The source name of an output tensor of the five-slice self-merge.
fn source_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("blk.") else { return name.to_owned() };
    let (layer, tail) = rest.split_once('.').unwrap();
    let layer: usize = layer.parse().unwrap();
    format!("blk.{}.{tail}", layer / 10 * 5 + layer % 10)
}

#[test]
fn a_quantized_gguf_self_merges_losslessly_and_runs_as_its_virtual_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let text = gpl3(tmp.path(), 16384);
    let config = smollm2_config(tmp.path(), &smollm2(), "dtype: float16\n");
    let out = tmp.path().join("merged.gguf");
    run_ok(amalgam().arg("merge").arg(&config).arg(&out).arg("--quiet"));

    let source = GgufFile::open(&smollm2()).unwrap();
    let merged = GgufFile::open(&out).unwrap();
    let (source_tensors, merged_tensors) = (gguf_tensors(&smollm2()), gguf_tensors(&out));
    assert_eq!(merged_tensors.len(), 2 + 50 * 9, "tied embeddings: no output.weight");
    let mut copied = 0;
    for (name, ty, dims, bytes) in &merged_tensors {
        let want = source_name(name);
        let (_, sty, sdims, sbytes) =
            source_tensors.iter().find(|t| t.0 == want).unwrap_or_else(|| panic!("{want}"));
        assert_eq!((ty, dims), (sty, sdims), "{name}");
        copied += usize::from(bytes == sbytes);
    }
    assert_eq!(copied, merged_tensors.len(), "every tensor is its source's blocks");
    assert_eq!(merged.header.get("general.file_type"), source.header.get("general.file_type"));

    let (virt, log) = perplexity(&config, &text, None);
    assert!(log.contains("50 layers over 30 stored layers"), "{log}");
    // The 50 layers map the 30-layer file's weights and no more; the cache is 50 layers'
    // (128 positions × 192 values × K and V × 2 bytes = 96 KiB a layer).
    let (_, source_log) = perplexity(&smollm2(), &text, None);
    let mapped = |log: &str| {
        log.split(" MiB of weights mapped").next().unwrap().rsplit(' ').next().unwrap().to_owned()
    };
    assert_eq!(mapped(&log), mapped(&source_log), "{log}\n{source_log}");
    assert!(log.contains("context 128 (5 MiB of KV cache)"), "{log}");
    assert!(source_log.contains("context 128 (3 MiB of KV cache)"), "{source_log}");
    let (written, _) = perplexity(&out, &text, None);
    assert_eq!(virt, written, "virtual and written merge differ");
}

#[test]
fn k_quant_blocks_are_copied_not_quantized_again() {
    // Q4_1 blocks survive being dequantized and quantized again; Q4_K_M's do not, so
    // only a copy gives back the source's bytes.
    let tmp = tempfile::tempdir().unwrap();
    let q4_k_m = tmp.path().join("q4_k_m.gguf");
    run_ok(
        amalgam()
            .arg("quantize")
            .arg(smollm2())
            .arg(&q4_k_m)
            .args(["--quant", "Q4_K_M", "--quiet"]),
    );
    let config = smollm2_config(tmp.path(), &q4_k_m, "dtype: float16\n");
    let out = tmp.path().join("merged.gguf");
    run_ok(amalgam().arg("merge").arg(&config).arg(&out).arg("--quiet"));
    let source = gguf_tensors(&q4_k_m);
    for (name, ty, _, bytes) in gguf_tensors(&out) {
        let want = source_name(&name);
        let (_, sty, _, sbytes) = source.iter().find(|t| t.0 == want).unwrap();
        assert!(ty == *sty && bytes == *sbytes, "{name} is not {want}'s blocks");
    }
}

#[test]
fn scaled_tensors_of_a_lossless_merge_keep_their_quants_and_run_as_the_virtual_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let text = gpl3(tmp.path(), 16384);
    let scale = "parameters:\n  scale:\n  - filter: o_proj\n    value: 0.5\n  - value: 1.0\n";
    let config = smollm2_config(tmp.path(), &smollm2(), scale);
    let out = tmp.path().join("scaled.gguf");
    let log = run_ok(amalgam().arg("merge").arg(&config).arg(&out).args(["--quant", "source"]));
    let log = String::from_utf8(log.stderr).unwrap();
    assert!(log.contains("50 scaled tensors keep their quants"), "{log}");
    assert!(!log.contains("quantized again"), "{log}");
    let source = gguf_tensors(&smollm2());
    let half = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    for (name, ty, _, bytes) in gguf_tensors(&out) {
        let want = source_name(&name);
        let (_, sty, _, sbytes) = source.iter().find(|t| t.0 == want).unwrap();
        assert_eq!(&ty, sty, "{name}");
        if !name.ends_with("attn_output.weight") {
            assert!(&bytes == sbytes, "{name} is not {want}'s blocks");
            continue;
        }
        // Q4_1 blocks: d and m (f16) halved exactly, the 16 bytes of quants kept.
        assert_eq!(ty, amalgam_gguf::GgmlType::Q4_1.name(), "{name}");
        for (block, source) in bytes.chunks(20).zip(sbytes.chunks(20)) {
            assert_eq!(block[4..], source[4..], "{name}: quants");
            assert_eq!(half(&block[0..2]), half(&source[0..2]) * 0.5, "{name}: d");
            assert_eq!(half(&block[2..4]), half(&source[2..4]) * 0.5, "{name}: m");
        }
    }
    // A scale of 0.5 is exact on the block scales, and on the products the virtual merge
    // multiplies: the same logits, bit for bit.
    let (virt, _) = perplexity(&config, &text, None);
    let (written, _) = perplexity(&out, &text, None);
    assert_eq!(virt, written, "virtual and written merge differ");
}

/// `pattern`-free pseudo-random values in [-1, 1) (SplitMix64).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A matrix times `x` through the engine's kernels, with the matrix's scale applied as
/// the forward pass applies it.
fn product(w: &amalgam_llama::Matrix, x: &[f32]) -> Vec<f32> {
    use amalgam_llama::kernels::{Activations, Kernels, matmul};
    let act = Activations::new(w.ty, x, w.cols);
    let mut out = vec![0f32; x.len() / w.cols * w.rows];
    matmul(&amalgam_llama::pool::global(), Kernels::best(), w, &act, &mut out);
    amalgam_llama::ops::scale(&mut out, w.scale);
    out
}

#[test]
fn a_scaled_product_is_within_one_rounding_of_the_scaled_weight() {
    use amalgam_llama::{Config, LayerMap, LayerRef, Model, TensorSource};
    use amalgam_tensors::ModelFolder;

    // SmolLM2 in bfloat16, and its five-slice self-merge with every down_proj scaled by
    // 0.7 written in bfloat16: each written weight is round_bf16(0.7 · w).
    let tmp = tempfile::tempdir().unwrap();
    let bf16 = tmp.path().join("bf16");
    run_ok(amalgam().arg("convert").arg(smollm2()).arg(&bf16).args(["--dtype", "bf16", "--quiet"]));
    let scale = "parameters:\n  scale:\n  - filter: down_proj\n    value: 0.7\ndtype: bfloat16\n";
    let config = smollm2_config(tmp.path(), &bf16, scale);
    let written = tmp.path().join("written");
    run_ok(amalgam().arg("merge").arg(&config).arg(&written).arg("--quiet"));

    let (source, merged) =
        (ModelFolder::open(&bf16).unwrap(), ModelFolder::open(&written).unwrap());
    let mut map = LayerMap::identity(0);
    for start in [0, 5, 10, 15, 20] {
        map.layers.extend((start..start + 10).map(|layer| LayerRef {
            source: 0,
            layer,
            scales: vec![("mlp.down_proj.weight".into(), 0.7)],
        }));
    }
    let sources: [&dyn TensorSource; 1] = [&source];
    let config = Config::from_hf(source.config()).unwrap();
    let virt = Model::from_map(&sources, config, &map).unwrap();
    let mat = Model::load(&merged, Config::from_hf(merged.config()).unwrap()).unwrap();
    assert_eq!((virt.layers.len(), mat.layers.len()), (50, 50));

    // |Σ round(s·w)·x − s·Σ w·x| ≤ u·Σ|s·w·x| with u = 2^-8, bfloat16's unit roundoff;
    // each side's f32 sum of n terms adds at most n·2^-24·Σ|s·w·x| more.
    let (tokens, cols) = (3, virt.config.intermediate);
    let bound_factor = 2f64.powi(-8) + 2.0 * cols as f64 * 2f64.powi(-24);
    let mut worst = 0f64;
    for (i, (v, m)) in virt.layers.iter().zip(&mat.layers).enumerate() {
        let x = noise(i as u64, tokens * cols);
        let (yv, ym) = (product(&v.down, &x), product(&m.down, &x));
        let mut row = vec![0f32; cols];
        for r in 0..v.down.rows {
            v.down.decode_row(r, &mut row);
            for t in 0..tokens {
                let xs = &x[t * cols..(t + 1) * cols];
                let magnitude: f64 =
                    row.iter().zip(xs).map(|(w, x)| f64::from((0.7 * w * x).abs())).sum();
                let k = t * v.down.rows + r;
                let diff = f64::from(yv[k] - ym[k]).abs();
                assert!(
                    diff <= bound_factor * magnitude,
                    "layer {i} row {r} token {t}: {} vs {} (bound {})",
                    yv[k],
                    ym[k],
                    bound_factor * magnitude
                );
                worst = worst.max(diff / magnitude);
            }
        }
    }
    assert!(worst > 0.0, "the two products should differ somewhere");
    eprintln!("worst |Δ| / Σ|s·w·x| = {worst:.3e} (bound {bound_factor:.3e})");
}

#[test]
fn slices_of_two_models_run_virtually_bit_equal_to_their_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let text = gpl3(tmp.path(), 16384);
    let models = data().join("methods/models");
    let path = |m: &str| serde_json::to_string(&models.join(m).display().to_string()).unwrap();
    let (a, b) = (path("ft_a"), path("ft_b"));
    let yaml = format!(
        "slices:\n- sources: [{{model: {a}, layer_range: [0, 4]}}]\n- sources: [{{model: {b}, layer_range: [2, 6]}}]\n- sources: [{{model: {a}, layer_range: [4, 6]}}]\nmerge_method: passthrough\ndtype: bfloat16\n"
    );
    let config = tmp.path().join("franken.yml");
    fs::write(&config, yaml).unwrap();
    let (virt, log) = perplexity(&config, &text, None);
    assert!(log.contains("10 layers over 10 stored layers of "), "{log}");
    let written = tmp.path().join("written");
    run_ok(amalgam().arg("merge").arg(&config).arg(&written).arg("--quiet"));
    assert_eq!(virt, perplexity(&written, &text, None).0, "virtual and written merge differ");
}

#[test]
fn a_linear_config_is_merged_into_memory_first_and_answers_as_its_written_merge() {
    let models = data().join("methods/models");
    let config = data().join("methods/configs/linear.yml");
    let generate = |model: &Path| {
        let mut cmd = amalgam();
        cmd.current_dir(&models).arg("generate").arg(model);
        cmd.args(["-p", "hello", "-n", "8", "--temperature", "0"]);
        let out = run_ok(&mut cmd);
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (answer, log) = generate(&config);
    assert!(
        log.contains("cannot run virtually (merge_method linear computes new weights")
            && log.contains("merging it into memory first"),
        "{log}"
    );
    let (_dir, written) = merge_in(&models, &config);
    assert_eq!(answer, generate(&written).0);
    let pid_files = fs::read_dir("/dev/shm").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("amalgam-merge-"))
            .count()
    });
    assert_eq!(pid_files, 0, "the in-memory merge is removed once open");
}

/// A copy of the tiny Q8_0 GGUF with every `attn_output` stored as Q8_1 (an activation
/// type, which no converter writes and the engine does not multiply by).
fn with_q8_1_outputs(dir: &Path) -> PathBuf {
    use amalgam_gguf::quant::{dequantize, quantize};
    use amalgam_gguf::{GgmlType, TensorSpec};
    use amalgam_tensors::PositionedFile;
    let file = GgufFile::open(&data().join("gguf/tiny-kq-Q8_0.gguf")).unwrap();
    let mut specs = Vec::new();
    let mut datas = Vec::new();
    for t in &file.header.tensors {
        let mut spec = TensorSpec { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty };
        let mut bytes = file.data(t).to_vec();
        if t.name.ends_with("attn_output.weight") {
            let n = t.dims.iter().product::<u64>() as usize;
            let mut values = vec![0f32; n];
            dequantize(t.ty, &bytes, &mut values);
            spec.ty = GgmlType::Q8_1;
            bytes = vec![0u8; spec.size() as usize];
            quantize(GgmlType::Q8_1, &values, &mut bytes);
        }
        specs.push(spec);
        datas.push(bytes);
    }
    let path = dir.join("q8_1.gguf");
    let writer = PositionedFile::create(
        &path,
        amalgam_gguf::write::layout(&file.header.metadata, &specs).unwrap(),
    )
    .unwrap();
    for (i, bytes) in datas.iter().enumerate() {
        writer.write_at(i, 0, bytes).unwrap();
    }
    writer.finish().unwrap();
    path
}

#[test]
fn a_scale_on_a_type_that_cannot_be_written_again_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model =
        serde_json::to_string(&with_q8_1_outputs(tmp.path()).display().to_string()).unwrap();
    let yaml = format!(
        "slices:\n- sources: [{{model: {model}, layer_range: [0, 4]}}]\n- sources: [{{model: {model}, layer_range: [2, 6], parameters: {{scale: [{{filter: o_proj, value: 0.5}}]}}}}]\nmerge_method: passthrough\n"
    );
    let config = tmp.path().join("scaled.yml");
    fs::write(&config, yaml).unwrap();
    let err = error_of(amalgam().arg("merge").arg(&config).arg(tmp.path().join("out.gguf")));
    assert!(
        err.contains("blk.2.attn_output.weight") || err.contains("model.layers.4.self_attn.o_proj"),
        "{err}"
    );
    assert!(err.contains("Q8_1") && err.contains("pass --quant"), "{err}");
    let err = error_of(amalgam().arg("generate").arg(&config).args(["-p", "hi"]));
    assert!(err.contains("o_proj") && err.contains("Q8_1, which is an activation type"), "{err}");
}

#[test]
fn a_layer_range_past_the_source_is_an_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let model = data().join("gguf/tiny-kq-Q8_0.gguf");
    let model = serde_json::to_string(&model.display().to_string()).unwrap();
    let config = tmp.path().join("long.yml");
    let yaml = format!(
        "slices:\n- sources: [{{model: {model}, layer_range: [4, 12]}}]\nmerge_method: passthrough\n"
    );
    fs::write(&config, yaml).unwrap();
    let err = error_of(amalgam().arg("perplexity").arg(&config).args(["-f", "/dev/null"]));
    assert!(
        err.contains("slices[0].sources[0].layer_range: [4, 12] goes past the 8 layers"),
        "{err}"
    );
}
