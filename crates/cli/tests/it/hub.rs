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

impl MockHub {
    fn start(model: &Path) -> MockHub {
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
                let _ = serve(stream, &files, &log);
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
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) =
        (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let mut authorized = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if header.to_ascii_lowercase().starts_with("authorization:")
            && header.contains(&format!("Bearer {TOKEN}"))
        {
            authorized = true;
        }
    }
    log.lock().unwrap().push(format!("{method} {path}"));
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
        let body = files.values().find(|b| etag(b) == blob).cloned().unwrap_or_default();
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
