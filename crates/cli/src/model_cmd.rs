//! `rlm model pull NAME` and `rlm model list`: local model files in the cache directory. Runs never download.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use rlm::local::{self, PullProgress};

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
    /// The directory models are kept in (default: $RLM_MODEL_DIR, else ~/.cache/rlm/models).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download a known model into the cache directory, checked against its pinned sha256.
    Pull {
        /// A known model name (see `rlm model list`); default: the model runs use without an endpoint.
        #[arg(default_value = local::DEFAULT_LOCAL_MODEL)]
        name: String,
        /// Also hash a file that is already there, and fetch it again if it does not match.
        #[arg(long)]
        verify: bool,
    },
    /// The known models and the model files in the cache directory.
    List,
}

pub async fn model(args: ModelArgs) -> Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(local::model_cache_dir);
    match args.command {
        ModelCommand::Pull { name, verify } => pull(&name, &dir, verify).await,
        ModelCommand::List => list(&dir),
    }
}

async fn pull(name: &str, dir: &std::path::Path, verify: bool) -> Result<ExitCode> {
    let model = match local::parse_local_spec(name)? {
        local::LocalSpec::Known(model) => model,
        local::LocalSpec::File(path) => {
            anyhow::bail!("{} is a path; `rlm model pull` takes a known name", path.display())
        }
    };
    let target = dir.join(model.file_name);
    if let Ok(metadata) = std::fs::metadata(&target)
        && metadata.len() == model.bytes
    {
        if !verify {
            eprintln!("{} is already in {} (add --verify to check its sha256)", model.name, target.display());
            return Ok(ExitCode::SUCCESS);
        }
        let hash = local::sha256_file(&target).with_context(|| format!("reading {}", target.display()))?;
        if hash == model.sha256 {
            eprintln!("{} is in {} and matches sha256 {}", model.name, target.display(), model.sha256);
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("{} has sha256 {hash}, expected {}; fetching it again", target.display(), model.sha256);
    }
    eprintln!("fetching {} ({}) into {}", model.name, model.description, dir.display());
    let started = Instant::now();
    let mut bar = Bar::new();
    let path = local::pull(model, dir, |progress| bar.draw(progress)).await?;
    bar.finish();
    eprintln!(
        "{} ready in {:.0} s: {} (sha256 {})",
        model.name,
        started.elapsed().as_secs_f64(),
        path.display(),
        model.sha256
    );
    Ok(ExitCode::SUCCESS)
}

fn list(dir: &std::path::Path) -> Result<ExitCode> {
    let cached = local::list_cached(dir).with_context(|| format!("reading {}", dir.display()))?;
    println!("known models (default {}):", local::DEFAULT_LOCAL_MODEL);
    for model in local::known_models() {
        let state = if cached.iter().any(|file| file.name == Some(model.name)) { "cached" } else { "not cached" };
        println!("  local:{:<22} {:<11} {}", model.name, state, model.description);
    }
    println!("files in {}:", dir.display());
    if cached.is_empty() {
        println!("  (none; fetch one with `rlm model pull NAME`)");
    }
    for file in &cached {
        let spec = file.name.map_or_else(|| format!("local:{}", file.path.display()), |name| format!("local:{name}"));
        println!("  {:<30} {:>8.1} MB  {}", spec, file.bytes as f64 / 1e6, file.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A one-line progress bar on stderr (a line per 10% when stderr is not a terminal).
struct Bar {
    started: Instant,
    terminal: bool,
    last_tenth: Option<u64>,
    drawn: bool,
}

impl Bar {
    fn new() -> Self {
        Self { started: Instant::now(), terminal: std::io::stderr().is_terminal(), last_tenth: None, drawn: false }
    }

    fn draw(&mut self, progress: &PullProgress) {
        let mb = progress.done_bytes as f64 / 1e6;
        let rate = mb / self.started.elapsed().as_secs_f64().max(0.001);
        let (fraction, total) = match progress.total_bytes {
            Some(total) if total > 0 => ((progress.done_bytes as f64 / total as f64).min(1.0), total as f64 / 1e6),
            _ => (0.0, 0.0),
        };
        if self.terminal {
            let filled = (fraction * 30.0) as usize;
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r[{}{}] {:>3.0}% {mb:>7.1}/{total:.1} MB {rate:>5.1} MB/s  {}\x1b[K",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                fraction * 100.0,
                progress.source
            );
            let _ = err.flush();
            self.drawn = true;
        } else {
            let tenth = (fraction * 10.0) as u64;
            if self.last_tenth != Some(tenth) {
                self.last_tenth = Some(tenth);
                eprintln!("{:>3}% {mb:.1}/{total:.1} MB {rate:.1} MB/s {}", tenth * 10, progress.source);
            }
        }
    }

    fn finish(&self) {
        if self.drawn {
            eprintln!();
        }
    }
}
