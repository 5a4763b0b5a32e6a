//! Loading the corpora: snippet files with a header of `# key: value` comment lines, split into cells at `# %%`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A line consisting of this marker starts a new cell (in the same session).
pub const CELL_SEPARATOR: &str = "# %%";

/// The `corpus/` directory at the root of the workspace.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..").join("corpus")
}

/// The fixed text every target binds to `context`.
pub fn context_path() -> PathBuf {
    corpus_dir().join("context.txt")
}

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Header { path: PathBuf, message: String },
}

/// What a differential comparison looks at, besides the kind of error each cell ended with (always compared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMode {
    /// stdout, byte for byte (the default).
    Stdout,
    /// stdout and stderr, byte for byte.
    StdoutStderr,
    /// Only the error kinds.
    ErrorKind,
}

impl CompareMode {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "stdout" => Some(Self::Stdout),
            "stdout+stderr" => Some(Self::StdoutStderr),
            "error-kind" => Some(Self::ErrorKind),
            _ => None,
        }
    }

    pub fn compares_stdout(self) -> bool {
        matches!(self, Self::Stdout | Self::StdoutStderr)
    }

    pub fn compares_stderr(self) -> bool {
        matches!(self, Self::StdoutStderr)
    }
}

/// A snippet of the differential corpus.
#[derive(Debug, Clone)]
pub struct DifferentialSnippet {
    /// File name, e.g. `str_methods.py`.
    pub file: String,
    /// `# name:`
    pub name: String,
    /// `# compare:` (default [`CompareMode::Stdout`]).
    pub compare: CompareMode,
    /// `# differs:` — why the output legitimately differs between a REPL and plain `python3`. The output difference
    /// is then reported instead of failing; error kinds are still compared.
    pub differs: Option<String>,
    pub cells: Vec<String>,
}

/// What must happen when a hostile snippet runs in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// The last cell ends with an exception of one of these kinds.
    Error(Vec<String>),
    /// A cell is interrupted by the cell time limit (`TimeoutError`).
    Timeout,
    /// Every cell completes without an error and the output never contains [`LEAK_MARKER`].
    Contained,
    /// A cell ends with `MemoryError` or `RecursionError`, or the executor reports a failure (a trap: out of memory
    /// or stack) instead of an outcome.
    Memory,
}

/// What a hostile snippet prints when its attempt worked.
pub const LEAK_MARKER: &str = "LEAK";

impl Expectation {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "timeout" => Some(Self::Timeout),
            "contained" => Some(Self::Contained),
            "memory" => Some(Self::Memory),
            _ => {
                let kinds = text.strip_prefix("error:")?;
                let kinds: Vec<String> = kinds.split('|').map(|k| k.trim().to_owned()).collect();
                let valid = kinds.iter().all(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
                valid.then_some(Self::Error(kinds))
            }
        }
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Error(kinds) => write!(f, "error:{}", kinds.join("|")),
            Self::Timeout => f.write_str("timeout"),
            Self::Contained => f.write_str("contained"),
            Self::Memory => f.write_str("memory"),
        }
    }
}

/// A snippet of the hostile corpus.
#[derive(Debug, Clone)]
pub struct HostileSnippet {
    pub file: String,
    /// `# threat:`
    pub threat: String,
    /// `# expect:`
    pub expect: Expectation,
    /// `# local: yes|no` — whether the snippet is safe to run on the (unsandboxed) local executor and must be
    /// contained there too.
    pub local: bool,
    /// `# host-absent: <path>` (repeatable) — host paths that must not exist after the snippet ran.
    pub host_absent: Vec<PathBuf>,
    pub cells: Vec<String>,
}

/// A parsed snippet file: its header and its cells.
#[derive(Debug)]
struct SnippetFile {
    path: PathBuf,
    file: String,
    headers: BTreeMap<String, Vec<String>>,
    cells: Vec<String>,
}

impl SnippetFile {
    fn read(path: &Path) -> Result<Self, CorpusError> {
        let source =
            std::fs::read_to_string(path).map_err(|source| CorpusError::Io { path: path.to_owned(), source })?;
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in source.lines() {
            let Some(comment) = line.strip_prefix("# ") else { break };
            let Some((key, value)) = comment.split_once(':') else { break };
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                break;
            }
            headers.entry(key.to_owned()).or_default().push(value.trim().to_owned());
        }
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { path: path.to_owned(), file, headers, cells: split_cells(&source) })
    }

    fn error(&self, message: impl Into<String>) -> CorpusError {
        CorpusError::Header { path: self.path.clone(), message: message.into() }
    }

    fn check_keys(&self, allowed: &[&str]) -> Result<(), CorpusError> {
        match self.headers.keys().find(|key| !allowed.contains(&key.as_str())) {
            Some(key) => Err(self.error(format!("unknown header `{key}` (allowed: {})", allowed.join(", ")))),
            None => Ok(()),
        }
    }

    /// The value of a header that must appear at most once.
    fn single(&self, key: &str) -> Result<Option<&str>, CorpusError> {
        match self.headers.get(key).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([value]) if !value.is_empty() => Ok(Some(value)),
            Some([_]) => Err(self.error(format!("header `{key}` is empty"))),
            Some(_) => Err(self.error(format!("header `{key}` appears more than once"))),
        }
    }

    fn required(&self, key: &str) -> Result<&str, CorpusError> {
        self.single(key)?.ok_or_else(|| self.error(format!("missing header `# {key}: ...`")))
    }

    fn check_cells(&self) -> Result<(), CorpusError> {
        if self.cells.iter().any(|cell| cell.trim().is_empty()) {
            return Err(self.error("empty cell"));
        }
        Ok(())
    }
}

/// Splits a snippet at its `# %%` lines. The header stays in the first cell (it is only comments).
pub fn split_cells(source: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    for line in source.split_inclusive('\n') {
        if line.trim_end() == CELL_SEPARATOR {
            cells.push(String::new());
        } else if let Some(cell) = cells.last_mut() {
            cell.push_str(line);
        }
    }
    cells
}

/// The `*.py` files of a directory, sorted by name.
fn snippet_paths(dir: &Path) -> Result<Vec<PathBuf>, CorpusError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CorpusError::Io { path: dir.to_owned(), source })?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|source| CorpusError::Io { path: dir.to_owned(), source })?.path();
        if path.extension().is_some_and(|ext| ext == "py") {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Loads and validates every snippet of the differential corpus in `dir`.
pub fn load_differential(dir: &Path) -> Result<Vec<DifferentialSnippet>, CorpusError> {
    snippet_paths(dir)?
        .iter()
        .map(|path| {
            let snippet = SnippetFile::read(path)?;
            snippet.check_keys(&["name", "compare", "differs"])?;
            snippet.check_cells()?;
            let name = snippet.required("name")?.to_owned();
            let compare = match snippet.single("compare")? {
                None => CompareMode::Stdout,
                Some(text) => CompareMode::parse(text).ok_or_else(|| {
                    snippet.error(format!("invalid `compare: {text}` (stdout, stdout+stderr or error-kind)"))
                })?,
            };
            let differs = snippet.single("differs")?.map(str::to_owned);
            Ok(DifferentialSnippet { file: snippet.file.clone(), name, compare, differs, cells: snippet.cells })
        })
        .collect()
}

/// Loads and validates every snippet of the hostile corpus in `dir`.
pub fn load_hostile(dir: &Path) -> Result<Vec<HostileSnippet>, CorpusError> {
    snippet_paths(dir)?
        .iter()
        .map(|path| {
            let snippet = SnippetFile::read(path)?;
            snippet.check_keys(&["threat", "expect", "local", "host-absent", "note"])?;
            snippet.check_cells()?;
            let threat = snippet.required("threat")?.to_owned();
            let expect_text = snippet.required("expect")?;
            let expect = Expectation::parse(expect_text).ok_or_else(|| {
                snippet.error(format!(
                    "invalid `expect: {expect_text}` (error:<Kind>[|<Kind>...], timeout, contained or memory)"
                ))
            })?;
            let local = match snippet.required("local")? {
                "yes" => true,
                "no" => false,
                other => return Err(snippet.error(format!("invalid `local: {other}` (yes or no)"))),
            };
            let host_absent: Vec<PathBuf> =
                snippet.headers.get("host-absent").into_iter().flatten().map(PathBuf::from).collect();
            if let Some(path) = host_absent.iter().find(|p| !p.is_absolute()) {
                return Err(snippet.error(format!("`host-absent: {}` must be an absolute path", path.display())));
            }
            Ok(HostileSnippet { file: snippet.file.clone(), threat, expect, local, host_absent, cells: snippet.cells })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_split_at_markers() {
        let cells = split_cells("# name: x\na = 1\n# %%\nprint(a)\n");
        assert_eq!(cells, vec!["# name: x\na = 1\n".to_owned(), "print(a)\n".to_owned()]);
    }

    #[test]
    fn expectations_parse() {
        assert_eq!(Expectation::parse("timeout"), Some(Expectation::Timeout));
        assert_eq!(
            Expectation::parse("error:OSError|PermissionError"),
            Some(Expectation::Error(vec!["OSError".to_owned(), "PermissionError".to_owned()]))
        );
        assert_eq!(Expectation::parse("error:"), None);
        assert_eq!(Expectation::parse("crash"), None);
    }
}
