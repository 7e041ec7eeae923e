//! Downloading from the hub, against a loopback mock of its API: the cache layout
//! `huggingface_hub` uses, only the files a merge needs, and tokens for gated models.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::common::*;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_secret";

/// A mock hub serving one gated repository, `org/tiny`, with the files of `model`.
struct MockHub {
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

/// How the mock's CDN serves the weights.
#[derive(Clone, Copy, PartialEq)]
enum Cdn {
    /// Whole, or from a `Range` start.
    Honest,
    /// A request from the start gets half the body, then the connection closes.
    Cuts,
    /// One byte of every body is wrong.
    Corrupts,
}

impl MockHub {
    fn start(model: &Path) -> MockHub {
        MockHub::serving(model, Cdn::Honest)
    }

    fn serving(model: &Path, cdn: Cdn) -> MockHub {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for entry in fs::read_dir(model).unwrap() {
            let entry = entry.unwrap();
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                fs::read(entry.path()).unwrap(),
            );
        }
        // Files a merge must never fetch.
        files.insert("original/consolidated.00.pth".into(), b"pickle".to_vec());
        files.insert("pytorch_model.bin".into(), b"pickle".to_vec());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &files, &log, cdn);
            }
        });
        MockHub { endpoint, requests }
    }

    fn requested(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn etag(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Answers one request (one per connection).
fn serve(
    stream: TcpStream,
    files: &BTreeMap<String, Vec<u8>>,
    log: &Mutex<Vec<String>>,
    cdn: Cdn,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) =
        (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let (mut authorized, mut from) = (false, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("authorization:") && header.contains(&format!("Bearer {TOKEN}")) {
            authorized = true;
        }
        if let Some(range) = lower.strip_prefix("range: bytes=") {
            from = range.trim().trim_end_matches('-').parse::<usize>().ok();
        }
    }
    let ranged = from.map(|f| format!(" from {f}")).unwrap_or_default();
    log.lock().unwrap().push(format!("{method} {path}{ranged}"));
    let mut out = stream;
    let respond = |out: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut head =
            format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (k, v) in headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "\r\n";
        out.write_all(head.as_bytes())?;
        if method != "HEAD" {
            out.write_all(body)?;
        }
        out.flush()
    };
    if let Some(blob) = path.strip_prefix("/cdn/") {
        let mut body = files.values().find(|b| etag(b) == blob).cloned().unwrap_or_default();
        if cdn == Cdn::Corrupts {
            body[100] ^= 1;
        }
        if let Some(from) = from {
            let range = format!("bytes {from}-{}/{}", body.len() - 1, body.len());
            return respond(
                &mut out,
                "206 Partial Content",
                &[("Content-Range", range)],
                &body[from..],
            );
        }
        if cdn == Cdn::Cuts {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            out.write_all(head.as_bytes())?;
            out.write_all(&body[..body.len() / 2])?;
            return out.flush();
        }
        return respond(&mut out, "200 OK", &[], &body);
    }
    if !authorized {
        return respond(&mut out, "401 Unauthorized", &[], b"{\"error\":\"gated\"}");
    }
    if path == "/api/models/org/tiny/revision/main" {
        let siblings: Vec<String> =
            files.keys().map(|f| format!("{{\"rfilename\":\"{f}\"}}")).collect();
        let body = format!("{{\"sha\":\"{SHA}\",\"siblings\":[{}]}}", siblings.join(","));
        return respond(&mut out, "200 OK", &[], body.as_bytes());
    }
    let prefix = format!("/org/tiny/resolve/{SHA}/");
    let Some(body) = path.strip_prefix(&prefix).and_then(|f| files.get(f)) else {
        return respond(&mut out, "404 Not Found", &[], b"");
    };
    let tag = etag(body);
    if path.ends_with(".safetensors") {
        // Large files are stored in LFS: the hub redirects to its CDN.
        let headers =
            [("Location", format!("/cdn/{tag}")), ("X-Linked-Etag", format!("\"{tag}\""))];
        return respond(&mut out, "302 Found", &headers, b"");
    }
    respond(&mut out, "200 OK", &[("ETag", format!("\"{}\"", &tag[..40]))], body)
}

#[test]
fn downloads_into_the_hub_cache_layout_and_reuses_it_offline() {
    let base = data().join("methods/models/base");
    let hub = MockHub::start(&base);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let config = tmp.path().join("config.yml");
    fs::write(&config, "merge_method: passthrough\nslices:\n- sources:\n  - {model: org/tiny, layer_range: [0, 2]}\n").unwrap();

    let merge = |out: &str| {
        let mut cmd = amalgam();
        cmd.env_remove("HF_HUB_OFFLINE")
            .env("HF_HUB_CACHE", &cache)
            .env("HF_ENDPOINT", &hub.endpoint)
            .env("HF_TOKEN", TOKEN)
            .arg("merge")
            .arg(&config)
            .arg(tmp.path().join(out))
            .arg("--quiet");
        cmd
    };
    run_ok(&mut merge("first"));

    let repo = cache.join("models--org--tiny");
    assert_eq!(fs::read_to_string(repo.join("refs/main")).unwrap(), SHA);
    let link =
        fs::read_link(repo.join("snapshots").join(SHA).join("model-00001-of-00003.safetensors"))
            .unwrap();
    assert!(link.to_string_lossy().starts_with("../../blobs/"), "{link:?}");
    let requested = hub.requested();
    assert!(requested.iter().all(|r| !r.contains(".pth") && !r.contains(".bin")), "{requested:?}");
    assert!(requested.iter().any(|r| r.starts_with("GET /cdn/")), "{requested:?}");

    // The merged layers are the base model's, byte for byte.
    let ours = read_model(&tmp.path().join("first"));
    let theirs = read_model(&base);
    for name in
        ["model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"]
    {
        assert_eq!(ours[name].1.bytes, theirs[name].1.bytes, "{name}");
    }
    assert!(
        fs::read_to_string(tmp.path().join("first/README.md")).unwrap().contains("- org/tiny\n")
    );

    // Offline, from the cache alone.
    let before = hub.requested().len();
    run_ok(merge("second").env("HF_HUB_OFFLINE", "1"));
    assert_eq!(hub.requested().len(), before, "no request when cached");
}

#[test]
fn gated_repository_without_a_token_says_how_to_get_access() {
    let hub = MockHub::start(&data().join("methods/models/base"));
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.yml");
    fs::write(&config, "merge_method: passthrough\nmodels:\n  - model: org/tiny\n").unwrap();
    let output = run(amalgam()
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HUB_CACHE", tmp.path().join("cache"))
        .env("HF_HOME", tmp.path().join("home"))
        .env("HF_ENDPOINT", &hub.endpoint)
        .arg("merge")
        .arg(&config)
        .arg(tmp.path().join("out")));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("org/tiny") && stderr.contains("HF_TOKEN"), "{stderr}");
    assert!(!tmp.path().join("out").exists());
}

/// A merge over `org/tiny` from `hub`, caching into `cache`.
fn merge_from(hub: &MockHub, cache: &Path, config: &Path, out: &Path) -> std::process::Command {
    let mut cmd = amalgam();
    cmd.env_remove("HF_HUB_OFFLINE")
        .env("HF_HUB_CACHE", cache)
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("HF_TOKEN", TOKEN)
        .arg("merge")
        .arg(config)
        .arg(out)
        .arg("--quiet");
    cmd
}

#[test]
fn a_download_cut_mid_file_continues_from_where_it_stopped() {
    let base = data().join("methods/models/base");
    let hub = MockHub::serving(&base, Cdn::Cuts);
    let tmp = tempfile::tempdir().unwrap();
    let (cache, config) = (tmp.path().join("cache"), tmp.path().join("config.yml"));
    fs::write(&config, "merge_method: passthrough\nmodels:\n  - model: org/tiny\n").unwrap();
    run_ok(&mut merge_from(&hub, &cache, &config, &tmp.path().join("out")));

    let continued: Vec<String> =
        hub.requested().into_iter().filter(|r| r.starts_with("GET /cdn/")).collect();
    assert_eq!(continued.len(), 6, "{continued:?}");
    assert_eq!(continued.iter().filter(|r| r.contains(" from ")).count(), 3, "{continued:?}");
    let ours = read_model(&tmp.path().join("out"));
    let theirs = read_model(&base);
    for (name, (_, tensor)) in &theirs {
        assert_eq!(ours[name].1.bytes, tensor.bytes, "{name}");
    }
    let blobs = cache.join("models--org--tiny/blobs");
    let left: Vec<_> = fs::read_dir(&blobs).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".incomplete")), "{left:?}");
}

#[test]
fn a_download_whose_bytes_miss_their_sha256_is_refused_and_removed() {
    let hub = MockHub::serving(&data().join("methods/models/base"), Cdn::Corrupts);
    let tmp = tempfile::tempdir().unwrap();
    let (cache, config) = (tmp.path().join("cache"), tmp.path().join("config.yml"));
    fs::write(&config, "merge_method: passthrough\nmodels:\n  - model: org/tiny\n").unwrap();
    let output = run(&mut merge_from(&hub, &cache, &config, &tmp.path().join("out")));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SHA-256") && stderr.contains("model-0000"), "{stderr}");
    let blobs = cache.join("models--org--tiny/blobs");
    // Weights are stored under their SHA-256 (64 hex digits), other files under 40.
    let weights: Vec<_> = fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 || n.ends_with(".incomplete"))
        .collect();
    assert!(weights.is_empty(), "damaged weights stayed in the cache: {weights:?}");
    assert!(!tmp.path().join("out").exists());
}
