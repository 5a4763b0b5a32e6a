//! Measures loading a big ASCII `TextFile` context: wall time and peak RSS (`VmHWM`).
//!
//! `cargo run --release -p rlm-executor-local --example load_context -- [MEGABYTES]` (default 1024).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use rlm_executor_local::LocalExecutor;
use rlm_protocol::{Context, ReplSession, SessionSpec, SubCall, SubCallHost, SubCallResult};

struct NoHost;

#[async_trait]
impl SubCallHost for NoHost {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        calls.into_iter().map(|_| Err("no host".to_owned())).collect()
    }
}

/// A field of /proc/self/status in kB (Linux only; 0 elsewhere).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let megabytes: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let size = megabytes << 20;
    let mut out = std::io::stdout().lock();

    let mut file = tempfile::NamedTempFile::new()?;
    {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file.as_file_mut());
        let line = b"the quick brown fox jumps over the lazy dog 0123456789\n";
        let mut written = 0;
        while written < size {
            let n = line.len().min(size - written);
            writer.write_all(&line[..n])?;
            written += n;
        }
        writer.flush()?;
    }
    LocalExecutor::initialize()?;
    let before = status_kb("VmHWM:");
    let started = Instant::now();
    let mut session = LocalExecutor::new()
        .start_local_session(SessionSpec::new(Context::TextFile(file.path().to_owned())), Arc::new(NoHost))
        .await?;
    let load = started.elapsed();
    let after = status_kb("VmHWM:");
    let info = session.context_info().clone();
    let started = Instant::now();
    let outcome = session.run_cell("print(context.count('fox'))").await?;
    let scan = started.elapsed();
    writeln!(
        out,
        "context: {} MB ({} chars, {})\nload: {:.0} ms\npeak RSS (VmHWM): {:.0} MB before, {:.0} MB after load \
         (+{:.0} MB = {:.2}x the file)\ncount('fox') -> {} in {:.0} ms",
        megabytes,
        info.total_chars,
        info.python_type,
        load.as_secs_f64() * 1000.0,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / size as f64,
        outcome.stdout.trim(),
        scan.as_secs_f64() * 1000.0,
    )?;
    Box::new(session).close().await?;
    Ok(())
}
