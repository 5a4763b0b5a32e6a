//! `rlm chat`: a conversation with one REPL. On a terminal it is interactive (a prompt with line editing, live
//! progress, `/context FILE`); otherwise it reads one query per line and prints one answer per line. `--session FILE`
//! keeps the conversation in a file after every change, so a restarted `rlm chat` picks it up where it stopped.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use rlm::{CancellationToken, RlmError, RlmSession, SavedSession, TraceSink};
use tokio::sync::mpsc;

use crate::args::{ExecutorArgs, ModelArgs};

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The first context (`context`, also `context_0`); same forms as for `run`. Not needed when --session names
    /// an existing session, which has its own.
    #[arg(long, short = 'c')]
    pub context: Option<PathBuf>,
    /// Keep the conversation in this file (written after every query and /context); an existing one is resumed by
    /// running its recorded cells again, with recorded model answers (no model is asked twice).
    #[arg(long, value_name = "FILE")]
    pub session: Option<PathBuf>,
    /// Wall-clock seconds for each query.
    #[arg(long)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Append every query's JSONL trajectory to this file (default: a new file per query in $RLM_TRACE_DIR or
    /// ./rlm-traces).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Write no trajectory.
    #[arg(long, conflicts_with = "trace")]
    pub no_trace: bool,
    /// Print each answer as one JSON object (answer, counts, usage, trace path) on its own line.
    #[arg(long)]
    pub json: bool,
    /// No progress or notes on stderr.
    #[arg(long)]
    pub quiet: bool,
}

const HELP: &str = "Type a question and press Enter. Commands:\n  /context FILE   add a context (context_1, context_2, …)\n  /help           this text\n  /quit           leave (Ctrl-D works too)";

/// A line typed or read, or the end of the input.
enum Input {
    Line(String),
    End,
}

pub async fn chat(args: ChatArgs) -> Result<ExitCode> {
    let saved = match &args.session {
        Some(path) if path.exists() => Some(read_session(path)?),
        _ => None,
    };
    let trace = crate::trace_target(args.trace.as_deref(), args.no_trace);
    let interactive = std::io::stdin().is_terminal();
    let notes = !args.quiet;
    let rlm = crate::build_rlm(&args.models, args.timeout, trace, args.executor.build()?, true, true, None).await?;

    let mut session = match saved {
        Some(saved) => {
            if args.context.is_some() && notes {
                eprintln!("rlm: resuming the session in the file; its own first context is used, not --context");
            }
            let turns = saved.turns.len();
            let cells = saved.journal.len();
            let session = rlm
                .resume_session(saved)
                .await
                .map_err(|err| anyhow::anyhow!("could not resume the session (the file was left unchanged): {err}"))?;
            if notes {
                eprintln!("rlm: resumed a session of {turns} queries ({cells} recorded steps replayed)");
            }
            session
        }
        None => {
            let Some(path) = &args.context else {
                bail!("rlm chat needs --context PATH (or --session FILE naming an existing session)");
            };
            let context = context_at(path)?;
            let session = rlm.session(context).await?;
            if let Some(file) = &args.session {
                write_session(file, &session.saved())?;
            }
            session
        }
    };
    if interactive && notes {
        eprintln!("{HELP}");
    }

    let (lines, mut inputs) = mpsc::channel::<Input>(1);
    let (ready, next_line) = std::sync::mpsc::channel::<()>();
    // Reading (and line editing) blocks: it gets its own thread, and waits for each answer before the next prompt.
    std::thread::spawn(move || read_lines(interactive, &lines, &next_line));

    let mut failed = false;
    loop {
        // While nothing runs, Ctrl-C ends a scripted chat (on a terminal the prompt handles it).
        let input = tokio::select! {
            input = inputs.recv() => input,
            _ = tokio::signal::ctrl_c(), if !interactive => None,
        };
        let Some(Input::Line(line)) = input else { break };
        let keep_going = handle(&mut session, &args, interactive, line.trim(), &mut failed).await?;
        if !keep_going {
            break;
        }
        if ready.send(()).is_err() {
            break;
        }
    }
    drop(ready);
    if let Err(err) = session.close().await {
        tracing::debug!("closing the session failed: {err}");
    }
    Ok(if failed && !interactive { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Handles one line; `false` ends the chat.
async fn handle(
    session: &mut RlmSession,
    args: &ChatArgs,
    interactive: bool,
    line: &str,
    failed: &mut bool,
) -> Result<bool> {
    let notes = !args.quiet;
    if line.is_empty() {
        return Ok(true);
    }
    if let Some(command) = line.strip_prefix('/') {
        let (name, rest) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
        match name {
            "quit" | "exit" => return Ok(false),
            "help" => eprintln!("{HELP}"),
            "context" if rest.trim().is_empty() => eprintln!("error: /context needs a file: /context FILE"),
            "context" => {
                let added = match context_at(Path::new(rest.trim())) {
                    Ok(context) => session.add_context(context).await.map_err(anyhow::Error::from),
                    Err(err) => Err(err),
                };
                match added {
                    Ok(name) => {
                        if notes {
                            eprintln!("rlm: loaded as `{name}`");
                        }
                        save(args, session)?;
                    }
                    Err(err) => {
                        *failed = true;
                        eprintln!("error: {err:#}");
                    }
                }
            }
            _ => eprintln!("error: unknown command /{name} (try /help)"),
        }
        return Ok(true);
    }

    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let progress = interactive && notes && std::io::stderr().is_terminal();
    let observer: Option<Arc<dyn TraceSink>> = progress.then(|| Arc::new(crate::progress::Progress::new()) as _);
    let outcome = session.ask_with(line, cancel, observer).await;
    watcher.abort();
    let (completion, failure) = match outcome {
        Ok(completion) => (completion, None),
        Err(RlmError::Failed { message, completion }) => (*completion, Some(message)),
        Err(err) => return Err(err.into()),
    };
    save(args, session)?;
    if args.json {
        println!("{}", serde_json::to_string(&completion)?);
    } else if interactive {
        if failure.is_none() {
            println!("{}\n", completion.answer);
        }
    } else {
        // One answer per line, always, so that answers stay aligned with the queries that asked them.
        println!("{}", completion.answer.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    if let Some(message) = failure {
        *failed = true;
        eprintln!("error: {message}");
    } else if notes && interactive {
        eprintln!(
            "({} iterations, {} sub-calls, {} tokens, {:.1} s)",
            completion.iterations,
            completion.sub_calls,
            completion.usage.total.total_tokens(),
            completion.duration_secs
        );
    }
    Ok(true)
}

fn read_lines(interactive: bool, lines: &mpsc::Sender<Input>, next_line: &std::sync::mpsc::Receiver<()>) {
    if interactive {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(editor) => Some(editor),
            Err(err) => {
                tracing::warn!("line editing is not available ({err}); reading plain lines");
                None
            }
        };
        if let Some(editor) = editor.as_mut() {
            loop {
                match editor.readline("rlm> ") {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.as_str());
                        if lines.blocking_send(Input::Line(line)).is_err() || next_line.recv().is_err() {
                            return;
                        }
                    }
                    // Ctrl-C at the prompt clears the line, as in a shell.
                    Err(rustyline::error::ReadlineError::Interrupted) => {}
                    Err(_) => break,
                }
            }
            let _ = lines.blocking_send(Input::End);
            return;
        }
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if lines.blocking_send(Input::Line(line)).is_err() || next_line.recv().is_err() {
            return;
        }
    }
    let _ = lines.blocking_send(Input::End);
}

/// A context from a path, kept absolute so a session file resumes from any directory.
fn context_at(path: &Path) -> Result<rlm::Context> {
    let path = if path.as_os_str() == "-" {
        bail!("rlm chat reads queries from standard input, so a context cannot come from it")
    } else {
        std::fs::canonicalize(path).with_context(|| format!("cannot read the context {}", path.display()))?
    };
    Ok(rlm::context_from_path(&path)?)
}

fn read_session(path: &Path) -> Result<SavedSession> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the session file {}", path.display()))?;
    serde_json::from_str(&text).map_err(|err| {
        anyhow::anyhow!("{} is not a session file rlm can read ({err}); it was left unchanged", path.display())
    })
}

fn save(args: &ChatArgs, session: &RlmSession) -> Result<()> {
    match &args.session {
        Some(path) => write_session(path, &session.saved()),
        None => Ok(()),
    }
}

/// Writes the session next to its file and renames it over the file, so a crash leaves the old or the new one.
fn write_session(path: &Path, saved: &SavedSession) -> Result<()> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(".partial");
    let staging = PathBuf::from(staging);
    let text = serde_json::to_vec(saved)?;
    std::fs::write(&staging, text).with_context(|| format!("cannot write the session file {}", staging.display()))?;
    std::fs::rename(&staging, path).with_context(|| format!("cannot replace the session file {}", path.display()))?;
    Ok(())
}
