//! The spool: a local JSONL file that holds trace events the database could not take yet, replayed later.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use rlm_protocol::TraceEvent;

use crate::TraceDbError;

#[derive(Debug)]
pub(crate) struct Spool {
    pub path: PathBuf,
    pub file: Option<File>,
    /// Events appended since the last replay took the file.
    pub pending: u64,
    pub replay_seq: u64,
}

impl Spool {
    pub fn append(&mut self, lines: &str) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        match self.file.as_mut() {
            Some(file) => {
                file.write_all(lines.as_bytes())?;
                file.flush()
            }
            None => Err(std::io::Error::other("spool file not open")),
        }
    }

    /// Moves the spool file aside for replay (new events go to a fresh file meanwhile).
    pub fn take(&mut self) -> std::io::Result<Option<PathBuf>> {
        if self.pending == 0 {
            return Ok(None);
        }
        self.file = None;
        self.replay_seq += 1;
        let name = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let target = self.path.with_file_name(format!("{name}.replay-{}.jsonl", self.replay_seq));
        std::fs::rename(&self.path, &target)?;
        self.pending = 0;
        Ok(Some(target))
    }
}

/// Reads a JSONL trajectory (or spool) file: the events, and the number of lines that are not events (a torn last
/// line after a crash, or another kind of JSON).
pub fn read_events(path: &Path) -> Result<(Vec<TraceEvent>, u64), TraceDbError> {
    let file = File::open(path).map_err(|e| TraceDbError::Io(format!("cannot open {}: {e}", path.display())))?;
    let mut events = Vec::new();
    let mut bad = 0;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| TraceDbError::Io(format!("cannot read {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TraceEvent>(&line) {
            Ok(event) => events.push(event),
            Err(_) => bad += 1,
        }
    }
    Ok((events, bad))
}
