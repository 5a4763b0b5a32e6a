//! Loading JSONL trajectories into the database.

use std::path::Path;

use rlm_models::Prices;
use sqlx::postgres::PgPool;

use crate::TraceDbError;
use crate::rows::{Batch, Converter};
use crate::spool::read_events;
use crate::store;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub files: u64,
    /// Events read from the files.
    pub events: u64,
    /// Events that were not in the database yet.
    pub inserted: u64,
    /// Lines that are not trace events (skipped).
    pub skipped_lines: u64,
}

/// Imports JSONL trajectory files (the JSONL traces `rlm run` writes, or a [`crate::PostgresSink`] spool file).
/// Idempotent: events already stored are skipped, so importing a file twice adds nothing. Migrates first.
pub async fn import_jsonl(
    pool: &PgPool,
    paths: &[impl AsRef<Path>],
    prices: &Prices,
    batch_size: usize,
) -> Result<ImportReport, TraceDbError> {
    store::migrate(pool).await?;
    let mut report = ImportReport::default();
    let mut converter = Converter::new(prices.clone());
    for path in paths {
        let (events, bad) = read_events(path.as_ref())?;
        report.files += 1;
        report.skipped_lines += bad;
        report.events += events.len() as u64;
        for chunk in events.chunks(batch_size.max(1)) {
            let mut batch = Batch::default();
            for event in chunk {
                converter.add(&mut batch, event);
            }
            report.inserted += store::write_batch(pool, &batch).await?;
        }
    }
    Ok(report)
}
