//! `rlm bench --family NAME`: generated tasks of one or more families against the configured endpoint, base model vs
//! rlm; `rlm bench sniah` is `rlm bench --family sniah`.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use rlm::{CancellationToken, TraceTarget};
use rlm_bench::{Family, System, Task, TaskResult};

use crate::args::{ExecutorArgs, ModelArgs, RouteArg};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Single-needle retrieval (RULER style), the same as `rlm bench --family sniah`: a key and a 7-digit value hidden
    /// at varied depths in varied filler.
    Sniah(Box<RunArgs>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Systems {
    Base,
    Rlm,
    Both,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Task families, comma-separated, or `all`: sniah (one needle), multikey (look-alike keys), multivalue (every
    /// value of a key, F1), aggregate (counts, sums, most common over records), pairs (pairs of records meeting a
    /// condition, F1), multihop (two facts to chain). See docs/benchmarks.md.
    #[arg(long)]
    pub family: Option<String>,
    /// Context sizes in characters (k = 1,000, m = 1,000,000), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8k,32k,128k")]
    pub sizes: Vec<String>,
    /// Tasks per family and size.
    #[arg(long, default_value_t = 5)]
    pub tasks: usize,
    /// Seed of the task generators: the same seed gives the same tasks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run only the tasks with these ids (e.g. `--task aggregate-128k-3`, repeatable; with one family `128k-3` is
    /// enough) out of the generated set: re-runs of single tasks see exactly the tasks of the full run.
    #[arg(long = "task")]
    pub only: Vec<String>,
    /// Which systems to run, comma-separated: base (the model alone, whole context in one call), rlm, or both.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "both")]
    pub systems: Vec<Systems>,
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
        Some(BenchCommand::Sniah(mut args)) => {
            match args.family.as_deref() {
                None => args.family = Some("sniah".to_owned()),
                Some(family) if family.eq_ignore_ascii_case("sniah") => {}
                Some(family) => {
                    bail!("`rlm bench sniah` runs the sniah family; for {family:?} use `rlm bench --family {family}`")
                }
            }
            bench(*args).await
        }
        None => bench(args.run).await,
    }
}

async fn bench(args: RunArgs) -> Result<()> {
    let Some(family_list) = args.family.as_deref() else {
        bail!(
            "name the task families: `rlm bench --family aggregate` (sniah, multikey, multivalue, aggregate, pairs, multihop, or all)"
        );
    };
    let families = Family::parse_list(family_list)?;
    if args.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    let sizes = args.sizes.iter().map(|s| rlm_bench::sniah::parse_size(s)).collect::<Result<Vec<_>, _>>()?;
    let mut tasks: Vec<Task> =
        families.iter().flat_map(|family| rlm_bench::generate(*family, &sizes, args.tasks, args.seed)).collect();
    if !args.only.is_empty() {
        // With one family, `128k-3` names `aggregate-128k-3`.
        let full_id = |id: &str| match families.as_slice() {
            [family] if !id.starts_with(family.as_str()) => format!("{}-{id}", family.as_str()),
            _ => id.to_owned(),
        };
        let wanted: Vec<String> = args.only.iter().map(|id| full_id(id)).collect();
        if let Some(unknown) = wanted.iter().find(|id| !tasks.iter().any(|t| &t.id == *id)) {
            bail!(
                "no task {unknown:?} among the generated ones (ids look like {} .. {})",
                tasks.first().map_or("", |t| t.id.as_str()),
                tasks.last().map_or("", |t| t.id.as_str())
            );
        }
        tasks.retain(|task| wanted.contains(&task.id));
    }
    if let Some(dir) = &args.write_tasks {
        return write_tasks(dir, &tasks);
    }
    let trace = match &args.trace_dir {
        Some(dir) => TraceTarget::Directory(dir.clone()),
        None => TraceTarget::Disabled,
    };
    let executor = args.executor.build()?;
    let wants = |system: Systems| args.systems.contains(&system) || args.systems.contains(&Systems::Both);
    let mut systems = Vec::new();
    if wants(Systems::Base) {
        let mut base_models = args.models.clone();
        base_models.route = RouteArg::Direct;
        let base =
            crate::build_rlm(&base_models, args.timeout, trace.clone(), executor.clone(), false, false, None).await?;
        systems.push((System::Base, base));
    }
    if wants(Systems::Rlm) {
        systems.push((
            System::Rlm,
            crate::build_rlm(&args.models, args.timeout, trace, executor, true, false, None).await?,
        ));
    }
    let model = systems.first().map(|(_, rlm)| rlm.engine().config().models.root.clone()).unwrap_or_default();
    let window = systems.last().and_then(|(_, rlm)| rlm.engine().config().window(&model));
    eprintln!(
        "{}: {} tasks x {} systems, model {model} at {}, window {}, seed {}",
        families.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(","),
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
                "[{}/{total}] {:<20} {:<4} {:<7} {:>4.2} {:>6.1} s  {:<6} expected {}, got {}{}",
                results.len() + 1,
                result.task,
                result.system.as_str(),
                if result.correct { "correct" } else { "wrong" },
                result.score,
                result.seconds,
                result.path,
                clip(&result.expected, 60),
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

fn write_tasks(dir: &std::path::Path, tasks: &[Task]) -> Result<()> {
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
