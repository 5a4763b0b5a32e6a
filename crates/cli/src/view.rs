//! `rlm view`: serve the trajectory viewer over local trace files.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// JSONL trace files, or directories of them (default: $RLM_TRACE_DIR or ./rlm-traces). Followed as they grow.
    pub paths: Vec<PathBuf>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Address to listen on. The viewer has no authentication: keep it on loopback unless you mean otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
}

pub async fn view(args: ViewArgs) -> Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        let dir = match std::env::var_os("RLM_TRACE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(rlm::TraceTarget::DEFAULT_DIRECTORY),
        };
        if !dir.is_dir() {
            bail!("no trace directory {} (runs write there; or name trace files or directories)", dir.display());
        }
        vec![dir]
    } else {
        args.paths
    };
    let source = rlm_viewer::FileSource::open(paths.clone(), Duration::from_millis(300))
        .await
        .with_context(|| format!("cannot read traces from {}", display(&paths)))?;
    let runs = rlm_viewer::RunSource::runs(source.as_ref()).await?.len();
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    println!("http://{host}:{}/", addr.port());
    eprintln!(
        "rlm view: {runs} runs, {} events from {}; following new lines. Ctrl-C stops.",
        source.event_count(),
        display(&paths)
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    rlm_viewer::serve(listener, source as Arc<dyn rlm_viewer::RunSource>, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

fn display(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
