//! The Hugging Face hub cache: finding a cached snapshot of `org/name@revision` with no
//! network, and (with the `hub-download` feature) filling the cache the way
//! `huggingface_hub` does, so either tool can use what the other fetched.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The hub cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    hf_home().join("hub")
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn hf_home() -> PathBuf {
    if let Some(dir) = env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("huggingface");
    }
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface")
}

/// Whether `HF_HUB_OFFLINE` asks for no network access.
pub fn offline() -> bool {
    env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
}

/// Whether `id` has the shape of a hub repository id: `name` or `org/name`, made of
/// letters, digits, `-`, `_` and `.`, without `..`.
pub fn is_repo_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.contains("..")
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
}

/// The cache folder of one repository: `models--org--name`.
pub fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// Whether `revision` is a full commit hash.
fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cached snapshot of `repo` at `revision` (default `main`), if it is in `cache`
/// with its `config.json` (a model) or `adapter_config.json` (a LoRA adapter).
pub fn find_cached(cache: &Path, repo: &str, revision: Option<&str>) -> Option<PathBuf> {
    let revision = revision.unwrap_or("main");
    let dir = repo_dir(cache, repo);
    let commit = if is_commit(revision) {
        revision.to_owned()
    } else {
        fs::read_to_string(dir.join("refs").join(revision)).ok()?.trim().to_owned()
    };
    if !is_commit(&commit) {
        return None;
    }
    let snapshot = dir.join("snapshots").join(commit);
    let complete = ["config.json", "adapter_config.json"].iter().any(|f| snapshot.join(f).exists());
    complete.then_some(snapshot)
}

/// The token for gated repositories: `$HF_TOKEN`, else the file `huggingface-cli login`
/// writes (`$HF_HOME/token`).
pub fn token() -> Option<String> {
    let from_env = env::var("HF_TOKEN").or_else(|_| env::var("HUGGING_FACE_HUB_TOKEN"));
    let token = match from_env {
        Ok(t) => t,
        Err(_) => fs::read_to_string(hf_home().join("token")).ok()?,
    };
    let token = token.trim().to_owned();
    (!token.is_empty()).then_some(token)
}

/// Whether a file of a repository is one a merge needs: configs, tokenizer files, the
/// model card and safetensors weights, at the top level only (so never `original/*.pth`).
pub fn wanted_file(name: &str) -> bool {
    if name.contains('/') {
        return false;
    }
    name.ends_with(".json")
        || name.ends_with(".safetensors")
        || name.ends_with(".jinja")
        || name.ends_with(".tiktoken")
        || matches!(name, "tokenizer.model" | "merges.txt" | "vocab.txt" | "README.md")
}

#[cfg(feature = "hub-download")]
pub use download::{DownloadOptions, download};

#[cfg(feature = "hub-download")]
mod download {
    //! Fetching a snapshot over HTTPS into the hub cache layout.

    use std::fs::{self, File, OpenOptions};
    use std::io::{self, Read, Write};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use serde_json::Value;
    use sha2::{Digest, Sha256};

    use super::{is_commit, repo_dir, wanted_file};
    use crate::error::{Error, Result};

    /// Where to download from and how to report progress.
    pub struct DownloadOptions<'a> {
        /// The hub's address, `$HF_ENDPOINT` or `https://huggingface.co`.
        pub endpoint: String,
        pub token: Option<String>,
        /// Called with (file name, bytes so far, total bytes if known).
        pub progress: &'a dyn Fn(&str, u64, Option<u64>),
    }

    impl DownloadOptions<'_> {
        /// Options from the environment (`HF_ENDPOINT`, `HF_TOKEN`), without progress.
        pub fn from_env() -> DownloadOptions<'static> {
            let endpoint = std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "https://huggingface.co".to_owned());
            DownloadOptions {
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                token: super::token(),
                progress: &|_, _, _| {},
            }
        }
    }

    /// Downloads the files a merge needs of `repo` at `revision` into `cache`, laid out as
    /// `huggingface_hub` lays them out, and returns the snapshot folder.
    pub fn download(
        cache: &Path,
        repo: &str,
        revision: Option<&str>,
        options: &DownloadOptions,
    ) -> Result<PathBuf> {
        let revision = revision.unwrap_or("main");
        let fail = |reason: String| Error::Download { repo: repo.to_owned(), reason };
        let agent = agent(0);
        let info_url = format!(
            "{}/api/models/{repo}/revision/{}",
            options.endpoint,
            revision.replace('/', "%2F")
        );
        let info: Value = get_json(&agent, &info_url, options.token.as_deref())
            .map_err(|e| fail(explain(e, repo, options.token.is_some())))?;
        let commit = info
            .get("sha")
            .and_then(Value::as_str)
            .filter(|s| is_commit(s))
            .ok_or_else(|| fail("the hub's answer has no commit hash".into()))?
            .to_owned();
        let files: Vec<String> = info
            .get("siblings")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(|f| f.get("rfilename")?.as_str().map(str::to_owned)))
            .into_iter()
            .flatten()
            .collect();
        check_has_safetensors(&files).map_err(fail)?;

        let dir = repo_dir(cache, repo);
        let snapshot = dir.join("snapshots").join(&commit);
        for sub in [dir.join("blobs"), snapshot.clone(), dir.join("refs")] {
            fs::create_dir_all(&sub).map_err(|e| Error::io("create", &sub, e))?;
        }
        for file in files.iter().filter(|f| wanted_file(f)) {
            fetch_file(repo, &commit, file, &dir, &snapshot, options)?;
        }
        if revision != commit {
            let refs = dir.join("refs").join(revision);
            if let Some(parent) = refs.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            fs::write(&refs, &commit).map_err(|e| Error::io("write", &refs, e))?;
        }
        Ok(snapshot)
    }

    /// Refuses repositories with pickle weights only, before anything is downloaded.
    fn check_has_safetensors(files: &[String]) -> Result<(), String> {
        if files.iter().any(|f| !f.contains('/') && f.ends_with(".safetensors")) {
            return Ok(());
        }
        if files.iter().any(|f| f.ends_with(".bin") || f.ends_with(".pth")) {
            return Err("it has only PyTorch pickle weights (*.bin), which amalgam never \
                        loads; convert them to safetensors first"
                .into());
        }
        Err("it has no *.safetensors weights".into())
    }

    /// Downloads one file into `blobs/<etag>` (unless present) and links it into the
    /// snapshot.
    fn fetch_file(
        repo: &str,
        commit: &str,
        file: &str,
        dir: &Path,
        snapshot: &Path,
        options: &DownloadOptions,
    ) -> Result<()> {
        let link = snapshot.join(file);
        if link.exists() {
            return Ok(());
        }
        let fail = |reason: String| Error::Download { repo: repo.to_owned(), reason };
        let url = format!("{}/{repo}/resolve/{commit}/{file}", options.endpoint);
        let token = options.token.as_deref();
        let head = request(&agent(0), "HEAD", &url, token, 0)
            .map_err(|e| fail(format!("{file}: {}", explain(e, repo, token.is_some()))))?;
        let header =
            |name: &str| head.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_owned())
            .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or_else(|| format!("{commit}-{}", file.replace('.', "-")));
        let blob = dir.join("blobs").join(&etag);
        if !blob.exists() {
            let location = header("location").map(|l| absolute(&options.endpoint, &l));
            let source = location.as_deref().unwrap_or(&url);
            // The `.incomplete` name is huggingface_hub's, so either tool can tidy or
            // continue it.
            let partial = blob.with_extension("incomplete");
            save_resuming(source, token, file, &partial, options)
                .map_err(|e| fail(format!("{file}: {e}")))?;
            if let Err(e) = verify(&partial, &etag) {
                let _ = fs::remove_file(&partial);
                return Err(fail(format!("{file}: {e}")));
            }
            crate::partial::commit(&partial, &blob)?;
        }
        std::os::unix::fs::symlink(format!("../../blobs/{etag}"), &link)
            .map_err(|e| Error::io("link", &link, e))
    }

    /// A `Location` header made absolute against the endpoint.
    fn absolute(endpoint: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{endpoint}{location}")
        }
    }

    /// Times a download is started or continued before giving up (a dropped connection
    /// is continued from where it stopped).
    const ATTEMPTS: u32 = 5;

    /// Why a download stopped: the connection failed (continue it) or the server
    /// refused (do not).
    enum Stop {
        Dropped(String),
        Refused(String),
    }

    /// Downloads `url` into `path`, continuing what an earlier attempt or run left there
    /// (HTTP `Range`), up to [`ATTEMPTS`] times.
    fn save_resuming(
        url: &str,
        token: Option<&str>,
        file: &str,
        path: &Path,
        options: &DownloadOptions,
    ) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 * u64::from(attempt)));
            }
            match save_body(url, token, file, path, options) {
                Ok(()) => return Ok(()),
                Err(Stop::Refused(e)) => return Err(e),
                Err(Stop::Dropped(e)) => last = e,
            }
        }
        let kept = fs::metadata(path).map_or(0, |m| m.len());
        Err(format!(
            "{last} ({ATTEMPTS} attempts); {kept} bytes are kept in {}, and running the \
             same command again continues from there",
            path.display()
        ))
    }

    /// Streams a GET body into `path`, asking only for what is missing when `path`
    /// already holds a start of the file.
    fn save_body(
        url: &str,
        token: Option<&str>,
        file: &str,
        path: &Path,
        options: &DownloadOptions,
    ) -> Result<(), Stop> {
        let have = fs::metadata(path).map_or(0, |m| m.len());
        let response = match request(&agent(10), "GET", url, token, have) {
            Ok(r) => r,
            // The kept part is longer than the file: start over.
            Err(ureq::Error::StatusCode(416)) => {
                let _ = fs::remove_file(path);
                return Err(Stop::Dropped("the kept part did not fit the file".into()));
            }
            Err(ureq::Error::StatusCode(code)) => {
                return Err(Stop::Refused(format!("the server answered {code}")));
            }
            Err(e) => return Err(Stop::Dropped(e.to_string())),
        };
        let continued = have > 0 && response.status().as_u16() == 206;
        let start = if continued { have } else { 0 };
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(|n| start + n);
        let mut reader = response.into_body().into_reader();
        let io_error = |e: io::Error| Stop::Refused(format!("{}: {e}", path.display()));
        let mut out = if continued {
            OpenOptions::new().append(true).open(path).map_err(io_error)?
        } else {
            File::create(path).map_err(io_error)?
        };
        let mut buffer = vec![0u8; 1 << 20];
        let mut done = start;
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = out.sync_all();
                    return Err(Stop::Dropped(format!("{e} after {done} bytes")));
                }
            };
            out.write_all(&buffer[..n]).map_err(io_error)?;
            done += n as u64;
            (options.progress)(file, done, total);
        }
        out.sync_all().map_err(io_error)?;
        match total {
            Some(t) if t != done => {
                Err(Stop::Dropped(format!("the connection closed after {done} of {t} bytes")))
            }
            _ => Ok(()),
        }
    }

    /// Checks a downloaded file against its etag where the etag is a SHA-256 (files in
    /// Git LFS, the weights); other files (Git blob ids) are not checked.
    fn verify(path: &Path, etag: &str) -> Result<(), String> {
        if etag.len() != 64 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
        let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if digest.eq_ignore_ascii_case(etag) {
            return Ok(());
        }
        Err(format!(
            "the downloaded bytes have SHA-256 {digest}, not the {etag} the hub lists; \
             the damaged download was removed, run the command again"
        ))
    }

    /// An agent following up to `redirects` redirects, with timeouts so that a dead
    /// network fails instead of hanging.
    fn agent(redirects: u32) -> ureq::Agent {
        ureq::Agent::config_builder()
            .max_redirects(redirects)
            .timeout_connect(Some(Duration::from_secs(20)))
            .user_agent(concat!("amalgam/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    }

    /// A HEAD or GET request, with the token if any and, from a byte `from > 0`, a
    /// `Range` for the rest of the file.
    fn request(
        agent: &ureq::Agent,
        method: &str,
        url: &str,
        token: Option<&str>,
        from: u64,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = if method == "HEAD" { agent.head(url) } else { agent.get(url) };
        if let Some(t) = token {
            request = request.header("Authorization", &format!("Bearer {t}"));
        }
        if from > 0 {
            request = request.header("Range", &format!("bytes={from}-"));
        }
        request.call()
    }

    fn get_json(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Result<Value, ureq::Error> {
        let text = request(agent, "GET", url, token, 0)?.into_body().read_to_string()?;
        serde_json::from_str(&text).map_err(|e| ureq::Error::Io(io::Error::other(e)))
    }

    /// Words an HTTP failure for a user, with the likely fix.
    fn explain(error: ureq::Error, repo: &str, has_token: bool) -> String {
        match error {
            ureq::Error::StatusCode(401 | 403) if has_token => format!(
                "access denied; {repo} is gated: accept its license on its hub page with \
                 the account whose token is in HF_TOKEN"
            ),
            ureq::Error::StatusCode(401 | 403) => format!(
                "access denied; {repo} may be gated or private: accept its license on its \
                 hub page and set HF_TOKEN to an access token of that account"
            ),
            ureq::Error::StatusCode(404) => format!(
                "no repository or revision named {repo} on the hub; check the spelling \
                 (or give a local folder that exists)"
            ),
            other => format!("{other} (no network? set HF_HUB_OFFLINE=1 to work from the cache)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_repo_id("meta-llama/Meta-Llama-3-70B-Instruct"));
        assert!(is_repo_id("gpt2"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("../x"));
        assert!(!is_repo_id("/abs/path"));
        assert!(!is_repo_id("org/na me"));
    }

    #[test]
    fn wanted_files() {
        assert!(wanted_file("model-00001-of-00030.safetensors"));
        assert!(wanted_file("tokenizer.json"));
        assert!(wanted_file("tokenizer.model"));
        assert!(!wanted_file("original/consolidated.00.pth"));
        assert!(!wanted_file("original/params.json"));
        assert!(!wanted_file("pytorch_model.bin"));
    }

    #[test]
    fn finds_snapshot_through_refs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_dir(dir.path(), "org/m");
        let sha = "7129260dd854a80eb10ace5f61c20324b472b31c";
        fs::create_dir_all(repo.join("snapshots").join(sha)).unwrap();
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/main"), sha).unwrap();
        assert!(find_cached(dir.path(), "org/m", None).is_none(), "no config.json yet");
        fs::write(repo.join("snapshots").join(sha).join("config.json"), "{}").unwrap();
        let found = find_cached(dir.path(), "org/m", None).unwrap();
        assert!(found.ends_with(sha));
        assert_eq!(find_cached(dir.path(), "org/m", Some(sha)), Some(found));
        assert!(find_cached(dir.path(), "org/m", Some("dev")).is_none());
    }
}
