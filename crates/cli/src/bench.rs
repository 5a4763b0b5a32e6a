//! `rlm bench sniah`: single-needle retrieval tasks against the configured endpoint, base model vs rlm.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use rlm::{CancellationToken, TraceTarget};
use rlm_bench::{System, TaskResult, sniah};

use crate::args::{ExecutorArgs, ModelArgs, RouteArg};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Single-needle retrieval (RULER style): a key and a 7-digit value hidden at varied depths in varied filler;
    /// runs the base model (whole context in one call) and rlm, scores exact matches, prints a table per size.
    Sniah(SniahArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Systems {
    Base,
    Rlm,
    Both,
}

#[derive(Debug, Args)]
pub struct SniahArgs {
    /// Context sizes in characters (k = 1,000, m = 1,000,000), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8k,32k,128k")]
    pub sizes: Vec<String>,
    /// Tasks per size.
    #[arg(long, default_value_t = 5)]
    pub tasks: usize,
    /// Seed of the task generator: the same seed gives the same tasks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run only the tasks with these ids (e.g. `--task 128k-3`, repeatable) out of the generated set: re-runs of single
    /// tasks see exactly the tasks of the full run.
    #[arg(long = "task")]
    pub only: Vec<String>,
    /// Which systems to run.
    #[arg(long, value_enum, default_value_t = Systems::Both)]
    pub systems: Systems,
    /// Seconds each run may take.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Write every task's result as JSON lines to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the trajectory of every run to this directory.
    #[arg(long)]
    pub trace_dir: Option<PathBuf>,
    /// Write the generated tasks (contexts, queries, answers) to this directory and run nothing.
    #[arg(long)]
    pub write_tasks: Option<PathBuf>,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Sniah(args) => sniah_bench(args).await,
    }
}

async fn sniah_bench(args: SniahArgs) -> Result<()> {
    if args.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    let sizes = args.sizes.iter().map(|s| sniah::parse_size(s)).collect::<Result<Vec<_>, _>>()?;
    let mut tasks = sniah::generate(&sizes, args.tasks, args.seed);
    if !args.only.is_empty() {
        if let Some(unknown) = args.only.iter().find(|id| !tasks.iter().any(|t| &t.id == *id)) {
            bail!(
                "no task {unknown:?} among the generated ones (ids look like 8k-1 .. {})",
                tasks.last().map_or("", |t| t.id.as_str())
            );
        }
        tasks.retain(|task| args.only.contains(&task.id));
    }
    if let Some(dir) = &args.write_tasks {
        return write_tasks(dir, &tasks);
    }
    let trace = match &args.trace_dir {
        Some(dir) => TraceTarget::Directory(dir.clone()),
        None => TraceTarget::Disabled,
    };
    let executor = args.executor.build()?;
    let mut systems = Vec::new();
    if args.systems != Systems::Rlm {
        let mut base_models = args.models.clone();
        base_models.route = RouteArg::Direct;
        let base =
            crate::build_rlm(&base_models, args.timeout, trace.clone(), executor.clone(), false, false, None).await?;
        systems.push((System::Base, base));
    }
    if args.systems != Systems::Base {
        systems.push((
            System::Rlm,
            crate::build_rlm(&args.models, args.timeout, trace, executor, true, false, None).await?,
        ));
    }
    let model = systems.first().map(|(_, rlm)| rlm.engine().config().models.root.clone()).unwrap_or_default();
    let window = systems.last().and_then(|(_, rlm)| rlm.engine().config().window(&model));
    eprintln!(
        "sniah: {} tasks x {} systems, model {model} at {}, window {}, seed {}",
        tasks.len(),
        systems.len(),
        systems.first().map(|(_, rlm)| rlm.base_url().to_owned()).unwrap_or_default(),
        window.map_or_else(|| "unknown".to_owned(), |w| format!("{w} tokens")),
        args.seed
    );

    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let mut json = match &args.json {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("could not create {}", path.display()))?,
        )),
        None => None,
    };
    let total = tasks.len() * systems.len();
    let mut results: Vec<TaskResult> = Vec::with_capacity(total);
    for task in &tasks {
        for (system, rlm) in &systems {
            if cancel.is_cancelled() {
                break;
            }
            let result = rlm_bench::run_task(rlm, *system, task, cancel.clone()).await;
            eprintln!(
                "[{}/{total}] {:<7} {:<4} {:<7} {:>6.1} s  {:<6} expected {}, got {}{}",
                results.len() + 1,
                result.task,
                result.system.as_str(),
                if result.correct { "correct" } else { "wrong" },
                result.seconds,
                result.path,
                result.expected,
                result.answer.as_deref().map_or_else(|| "no answer".to_owned(), |a| format!("{:?}", clip(a, 60))),
                result.error.as_deref().map_or_else(String::new, |e| format!(" ({})", clip(e, 120))),
            );
            if let Some(out) = json.as_mut() {
                use std::io::Write as _;
                serde_json::to_writer(&mut *out, &result)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            results.push(result);
        }
    }
    print!("{}", rlm_bench::render_table(&rlm_bench::summarize(&results)));
    if cancel.is_cancelled() {
        bail!("cancelled after {} of {total} runs", results.len());
    }
    Ok(())
}

fn clip(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max) {
        Some((index, _)) => format!("{}…", &one_line[..index]),
        None => one_line,
    }
}

fn write_tasks(dir: &std::path::Path, tasks: &[sniah::Task]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut index = String::new();
    for task in tasks {
        let path = dir.join(format!("{}.txt", task.id));
        std::fs::write(&path, &task.context).with_context(|| format!("could not write {}", path.display()))?;
        index.push_str(&serde_json::to_string(task)?);
        index.push('\n');
    }
    std::fs::write(dir.join("tasks.jsonl"), index)?;
    eprintln!("wrote {} tasks to {}", tasks.len(), dir.display());
    Ok(())
}
