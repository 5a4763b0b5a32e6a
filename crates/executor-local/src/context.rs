//! Turning a [`Context`] into the Python value bound to `context`, copying big inputs as few times as possible.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, PoisonError};

use pyo3::IntoPyObjectExt;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use rlm_protocol::{Context, ContextInfo};
use serde_json::Value;

use crate::error::{LocalError, LocalResult};
use crate::runtime::runtime;

/// Bytes read per `read` call when filling a string from a file: small enough that the ASCII check that follows each
/// read finds the bytes still in the CPU cache.
const READ_CHUNK: usize = 256 << 10;

/// A text file being read ahead of the session that will use it (see [`read_ahead`]).
struct ReadAhead {
    path: PathBuf,
    /// The string, or `None` when reading ahead failed (the session then reads the file itself and reports why).
    loaded: Receiver<Option<Py<PyAny>>>,
}

static READ_AHEAD: Mutex<Option<ReadAhead>> = Mutex::new(None);

/// Starts the interpreter and reads the text file at `path` into a Python string on a new thread, so that the next
/// session over `Context::TextFile(path)` takes the string instead of reading the file then. Replaces an earlier
/// read-ahead that no session took.
pub(crate) fn read_ahead(path: PathBuf) {
    let (loaded_tx, loaded_rx) = std::sync::mpsc::sync_channel(1);
    let mut slot = READ_AHEAD.lock().unwrap_or_else(PoisonError::into_inner);
    let reader_path = path.clone();
    let started = std::thread::Builder::new().name("rlm-context-read".to_owned()).spawn(move || {
        let loaded = match runtime() {
            Ok(_) => Python::attach(|py| load_text_file(py, &reader_path).ok().map(Bound::unbind)),
            Err(_) => None,
        };
        // The receiver is gone only when a later read-ahead replaced this one.
        let _ = loaded_tx.send(loaded);
    });
    *slot = started.is_ok().then_some(ReadAhead { path, loaded: loaded_rx });
}

/// The string read ahead for `context`, if it is a text file being read ahead; waits for the read to end. Call it
/// without being attached to the interpreter (the reading thread needs it to finish).
pub(crate) fn take_read_ahead(context: &Context) -> Option<Py<PyAny>> {
    let Context::TextFile(path) = context else { return None };
    let ahead = {
        let mut slot = READ_AHEAD.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(|ahead| ahead.path != *path) {
            return None;
        }
        slot.take()?
    };
    ahead.loaded.recv().ok().flatten()
}

/// Builds the Python value of `context`.
pub(crate) fn load<'py>(py: Python<'py>, context: &Context) -> LocalResult<Bound<'py, PyAny>> {
    match context {
        Context::Text(text) => Ok(PyString::new(py, text).into_any()),
        Context::Json(value) => Ok(json_to_py(py, value)?),
        Context::JsonFile(path) => load_json_file(py, path),
        Context::TextFile(path) => load_text_file(py, path),
    }
}

/// Computes what the root model is told about `context`.
pub(crate) fn info(prelude: &Bound<'_, PyModule>, context: &Bound<'_, PyAny>) -> LocalResult<ContextInfo> {
    let (python_type, total_chars, mut chunk_lengths, chunk_count): (String, u64, Vec<u64>, u64) =
        prelude.call_method1("context_info", (context,))?.extract()?;
    chunk_lengths.truncate(ContextInfo::MAX_CHUNKS_LISTED);
    Ok(ContextInfo { python_type, total_chars, chunk_lengths, chunk_count })
}

fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Value::Null => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)
            } else if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)
            }
        }
        Value::String(s) => Ok(PyString::new(py, s).into_any()),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            Ok(list.into_any())
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            Ok(dict.into_any())
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> LocalError {
    LocalError::Io { context: format!("cannot read context file {}", path.display()), source }
}

fn open_with_len(path: &Path) -> LocalResult<(File, usize)> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let len = file.metadata().map_err(|e| io_error(path, e))?.len();
    let len = usize::try_from(len).map_err(|_| LocalError::InvalidInput(format!("{} is too large", path.display())))?;
    Ok((file, len))
}

/// Reads the file straight into a Python `bytes` object, then `json.loads` it.
fn load_json_file<'py>(py: Python<'py>, path: &Path) -> LocalResult<Bound<'py, PyAny>> {
    let (mut file, len) = open_with_len(path)?;
    let mut read_error = None;
    let bytes = PyBytes::new_with(py, len, |buf| {
        if let Err(err) = py.detach(|| file.read_exact(buf)) {
            read_error = Some(err);
        }
        Ok(())
    })?;
    if let Some(err) = read_error {
        return Err(io_error(path, err));
    }
    let json = py.import("json")?;
    json.call_method1("loads", (bytes,)).map_err(|err| {
        LocalError::InvalidInput(format!("context file {} is not valid JSON: {}", path.display(), err.value(py)))
    })
}

/// Outcome of trying to read a file as ASCII straight into a string's buffer.
enum AsciiRead {
    /// The buffer holds the whole file, all ASCII.
    Complete,
    /// A non-ASCII byte, or the file changed size while being read: use the general path.
    NotAscii,
}

/// Files at least this big are read by several threads at once: the copy out of the page cache (and the faulting-in
/// of the fresh string's pages) is the whole cost of loading a big context, and it scales with the cores.
const PARALLEL_READ_MIN: usize = 64 << 20;

/// Most threads reading one file.
const MAX_READ_THREADS: usize = 4;

/// Fills `buf` from `file`, checking the bytes are ASCII; the file must be exactly `buf.len()` long. Big files are
/// read in parallel, each thread filling its own part of the buffer with positional reads.
fn read_ascii_into(file: &File, buf: &mut [u8]) -> std::io::Result<AsciiRead> {
    let threads = if buf.len() >= PARALLEL_READ_MIN {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_READ_THREADS)
    } else {
        1
    };
    read_ascii_with_threads(file, buf, threads)
}

fn read_ascii_with_threads(file: &File, buf: &mut [u8], threads: usize) -> std::io::Result<AsciiRead> {
    let give_up = AtomicBool::new(false);
    let complete = if threads <= 1 {
        read_ascii_part(file, buf, 0, &give_up)?
    } else {
        // Parts are whole chunks, so every read but the file's last one asks for a full chunk.
        let part_len = buf.len().div_ceil(threads).div_ceil(READ_CHUNK) * READ_CHUNK;
        let give_up = &give_up;
        std::thread::scope(|scope| {
            let readers: Vec<_> = buf
                .chunks_mut(part_len)
                .enumerate()
                .map(|(index, part)| {
                    let offset = (index * part_len) as u64;
                    scope.spawn(move || read_ascii_part(file, part, offset, give_up))
                })
                .collect();
            let mut complete = true;
            let mut failure = None;
            for reader in readers {
                match reader.join() {
                    Ok(Ok(part_complete)) => complete &= part_complete,
                    Ok(Err(err)) => failure = Some(err),
                    Err(_) => failure = Some(std::io::Error::other("a context reader thread panicked")),
                }
            }
            failure.map_or(Ok(complete), Err)
        })?
    };
    if !complete {
        return Ok(AsciiRead::NotAscii);
    }
    let mut probe = [0u8; 1];
    loop {
        match read_at(file, &mut probe, buf.len() as u64) {
            Ok(0) => return Ok(AsciiRead::Complete),
            Ok(_) => return Ok(AsciiRead::NotAscii), // grew while being read
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Fills `part` with the file's bytes from `offset`, chunk by chunk (each chunk checked while it is still in the
/// cache); `false` as soon as a byte is not ASCII, the file ends early, or another part gave up.
fn read_ascii_part(file: &File, part: &mut [u8], offset: u64, give_up: &AtomicBool) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < part.len() {
        if give_up.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let end = part.len().min(filled + READ_CHUNK);
        let n = match read_at(file, &mut part[filled..end], offset + filled as u64) {
            Ok(0) => 0, // shorter than its metadata said
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                give_up.store(true, Ordering::Relaxed);
                return Err(err);
            }
        };
        if n == 0 || !part[filled..filled + n].is_ascii() {
            give_up.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        filled += n;
    }
    Ok(true)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// Loads a UTF-8 text file as a `str`. ASCII files (the common case for big corpora) are read directly into the
/// buffer of a freshly allocated compact ASCII string, so the text exists once in memory; anything else is read into
/// memory and decoded (bytes + string at the peak).
fn load_text_file<'py>(py: Python<'py>, path: &Path) -> LocalResult<Bound<'py, PyAny>> {
    let (file, len) = open_with_len(path)?;
    if len > 0 {
        let size = ffi::Py_ssize_t::try_from(len)
            .map_err(|_| LocalError::InvalidInput(format!("{} is too large", path.display())))?;
        // SAFETY: we are attached to the interpreter; `PyUnicode_New(size, 127)` returns a new reference to a fresh
        // compact ASCII string of `size` characters (or NULL with an exception set, handled by
        // `from_owned_ptr_or_err`).
        let string = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyUnicode_New(size, 127)) }?;
        // SAFETY: `string` is a compact ASCII string (maxchar 127) that no other code references yet, whose data
        // buffer holds `len` one-byte characters (plus the NUL terminator we do not touch). The slice does not
        // outlive `string`, and we only keep the object if every byte written is ASCII, as maxchar 127 promises.
        let buf = unsafe { std::slice::from_raw_parts_mut(ffi::PyUnicode_DATA(string.as_ptr()).cast::<u8>(), len) };
        // The object is private to this thread, so other Python threads may run while the disk is read.
        let read = py.detach(|| read_ascii_into(&file, buf)).map_err(|e| io_error(path, e))?;
        if let AsciiRead::Complete = read {
            return Ok(string.into_any());
        }
        drop(string);
    }
    let bytes = py.detach(|| std::fs::read(path)).map_err(|e| io_error(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|err| {
        LocalError::InvalidInput(format!("context file {} is not valid UTF-8: {err}", path.display()))
    })?;
    Ok(PyString::new(py, text).into_any())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_file(bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
        let mut file = tempfile::NamedTempFile::new()?;
        file.write_all(bytes)?;
        file.flush()?;
        Ok(file)
    }

    #[test]
    fn ascii_reader_detects_non_ascii_and_size_changes() -> std::io::Result<()> {
        let file = write_file(b"hello")?;
        let mut buf = [0u8; 5];
        assert!(matches!(read_ascii_into(&File::open(file.path())?, &mut buf)?, AsciiRead::Complete));
        assert_eq!(&buf, b"hello");
        let mut short = [0u8; 4];
        assert!(matches!(read_ascii_into(&File::open(file.path())?, &mut short)?, AsciiRead::NotAscii));
        let mut long = [0u8; 6];
        assert!(matches!(read_ascii_into(&File::open(file.path())?, &mut long)?, AsciiRead::NotAscii));
        let utf8 = write_file("héllo".as_bytes())?;
        let mut buf = [0u8; 6];
        assert!(matches!(read_ascii_into(&File::open(utf8.path())?, &mut buf)?, AsciiRead::NotAscii));
        Ok(())
    }

    #[test]
    fn parallel_ascii_reader_fills_every_part() -> std::io::Result<()> {
        // Several chunks per part, and a last part shorter than the others.
        let len = 5 * READ_CHUNK + 7;
        let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let file = write_file(&text)?;
        for threads in [2, 3, 4] {
            let mut buf = vec![0u8; len];
            assert!(matches!(
                read_ascii_with_threads(&File::open(file.path())?, &mut buf, threads)?,
                AsciiRead::Complete
            ));
            assert!(buf == text, "{threads} threads");
            let mut short = vec![0u8; len - 1];
            let read = read_ascii_with_threads(&File::open(file.path())?, &mut short, threads)?;
            assert!(matches!(read, AsciiRead::NotAscii), "a longer file is not taken whole");
            let mut long = vec![0u8; len + 1];
            let read = read_ascii_with_threads(&File::open(file.path())?, &mut long, threads)?;
            assert!(matches!(read, AsciiRead::NotAscii), "a shorter file is not taken whole");
        }
        let mut last_not_ascii = text.clone();
        last_not_ascii[len - 2] = 0xc3;
        let file = write_file(&last_not_ascii)?;
        let mut buf = vec![0u8; len];
        assert!(matches!(read_ascii_with_threads(&File::open(file.path())?, &mut buf, 3)?, AsciiRead::NotAscii));
        Ok(())
    }

    #[test]
    fn text_files_load_as_str() -> Result<(), Box<dyn std::error::Error>> {
        runtime()?;
        let ascii = write_file(b"abc\ndef")?;
        let utf8 = write_file("na\u{ef}ve \u{1F600}".as_bytes())?;
        let empty = write_file(b"")?;
        let invalid = write_file(&[b'a', 0xff, b'b'])?;
        Python::attach(|py| -> Result<(), Box<dyn std::error::Error>> {
            let value = load_text_file(py, ascii.path())?;
            assert_eq!(value.extract::<String>()?, "abc\ndef");
            assert_eq!(value.len()?, 7);
            // The string must behave like any other str (hashing, comparison, methods).
            assert!(value.eq("abc\ndef")?);
            assert_eq!(value.call_method1("count", ("d",))?.extract::<usize>()?, 1);
            let value = load_text_file(py, utf8.path())?;
            assert_eq!(value.extract::<String>()?, "na\u{ef}ve \u{1F600}");
            assert_eq!(value.len()?, 7);
            assert_eq!(load_text_file(py, empty.path())?.extract::<String>()?, "");
            let err = load_text_file(py, invalid.path()).err().map(rlm_protocol::Error::from);
            assert!(matches!(err, Some(rlm_protocol::Error::InvalidInput(ref m)) if m.contains("UTF-8")), "{err:?}");
            let missing = load_text_file(py, Path::new("/nonexistent/rlm-context.txt")).err();
            assert!(matches!(missing.map(rlm_protocol::Error::from), Some(rlm_protocol::Error::Io(_))));
            Ok(())
        })
    }

    #[test]
    fn a_file_read_ahead_goes_to_the_first_session_over_that_path() -> Result<(), Box<dyn std::error::Error>> {
        let file = write_file(b"read ahead")?;
        let other = write_file(b"other")?;
        read_ahead(file.path().to_owned());
        assert!(take_read_ahead(&Context::TextFile(other.path().to_owned())).is_none());
        assert!(take_read_ahead(&Context::Text("read ahead".into())).is_none());
        let taken = take_read_ahead(&Context::TextFile(file.path().to_owned())).ok_or("not read ahead")?;
        Python::attach(|py| -> PyResult<()> {
            assert_eq!(taken.bind(py).extract::<String>()?, "read ahead");
            Ok(())
        })?;
        assert!(take_read_ahead(&Context::TextFile(file.path().to_owned())).is_none(), "taken once");
        // A read-ahead that fails leaves the file to the session, which reports why.
        let missing = file.path().with_extension("missing");
        read_ahead(missing.clone());
        assert!(take_read_ahead(&Context::TextFile(missing)).is_none());
        Ok(())
    }

    #[test]
    fn json_values_convert() -> Result<(), Box<dyn std::error::Error>> {
        runtime()?;
        Python::attach(|py| -> Result<(), Box<dyn std::error::Error>> {
            let value = serde_json::json!({"a": [1, -2, 3.5, null, true, "x"], "big": u64::MAX});
            let obj = json_to_py(py, &value)?;
            assert_eq!(obj.repr()?.to_string(), "{'a': [1, -2, 3.5, None, True, 'x'], 'big': 18446744073709551615}");
            Ok(())
        })
    }
}
