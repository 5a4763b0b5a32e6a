//! Live progress on a terminal, drawn from the run's trace events: iterations, cells as `In [n]` / `Out[n]`,
//! sub-call counts, tokens and elapsed time.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use anstyle::{AnsiColor, Style};
use rlm::{EventBody, TraceEvent, TraceSink};

const CODE_LINES: usize = 15;
const OUTPUT_LINES: usize = 12;

#[derive(Debug)]
pub struct Progress {
    started: Instant,
    color: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sub_calls: u64,
    sub_calls_since_cell: u64,
    tokens: u64,
    status_shown: bool,
}

impl Progress {
    pub fn new() -> Self {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self { started: Instant::now(), color, state: Mutex::new(State::default()) }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.color { format!("{style}{text}{style:#}") } else { text.to_owned() }
    }

    fn render(&self, event: &TraceEvent, state: &mut State) -> String {
        let dim = Style::new().dimmed();
        let bold = Style::new().bold();
        let green = Style::new().fg_color(Some(AnsiColor::Green.into()));
        let red = Style::new().fg_color(Some(AnsiColor::Red.into()));
        let blue = Style::new().fg_color(Some(AnsiColor::Blue.into())).bold();
        let yellow = Style::new().fg_color(Some(AnsiColor::Yellow.into()));
        let indent = "  ".repeat(event.depth as usize);
        let elapsed = self.started.elapsed().as_secs_f64();
        match &event.body {
            EventBody::Metadata(meta) if event.depth == 0 => format!(
                "{} model {} · executor {} · context: {} of {} chars\n",
                self.paint(bold, "rlm"),
                meta.root_model,
                meta.executor,
                meta.context.python_type,
                meta.context.total_chars
            ),
            EventBody::Metadata(meta) => {
                format!(
                    "{indent}{} child RLM at depth {} ({})\n",
                    self.paint(yellow, "↳"),
                    event.depth,
                    meta.root_model
                )
            }
            EventBody::ModelCall(call) => {
                state.tokens += call.usage.total_tokens();
                if event.depth > 0 {
                    return String::new();
                }
                let iteration = event.iteration.unwrap_or(0);
                let mut text = format!(
                    "{}\n",
                    self.paint(
                        blue,
                        &format!(
                            "── iteration {iteration} · {} · {:.1} s · {} tokens · {} sub-calls · {elapsed:.1} s elapsed",
                            call.model,
                            call.latency_ms / 1000.0,
                            state.tokens,
                            state.sub_calls
                        )
                    )
                );
                if let Some(error) = &call.error {
                    text.push_str(&self.paint(red, &format!("model call failed: {error}\n")));
                }
                if let Some(response) = &call.response {
                    let prose = rlm::parse_response(response).prose;
                    for line in prose.lines().filter(|l| !l.trim().is_empty()).take(4) {
                        text.push_str(&self.paint(dim, &format!("{line}\n")));
                    }
                }
                text
            }
            EventBody::Cell(cell) => {
                let mut text = String::new();
                if state.sub_calls_since_cell > 0 {
                    text.push_str(&format!("{indent}  ({} sub-calls)\n", state.sub_calls_since_cell));
                    state.sub_calls_since_cell = 0;
                }
                if event.depth > 0 {
                    return text;
                }
                text.push_str(&self.paint(green, &format!("In [{}]:\n", cell.index)));
                append_lines(&mut text, &cell.code, CODE_LINES);
                let out_style = if cell.error.is_some() { red } else { dim };
                text.push_str(&self.paint(out_style, &format!("Out[{}]: ({:.0} ms)\n", cell.index, cell.duration_ms)));
                let mut output = cell.stdout.clone();
                output.push_str(&cell.stderr);
                append_lines(&mut text, &output, OUTPUT_LINES);
                if let Some(error) = &cell.error {
                    text.push_str(&self.paint(red, &format!("{error}\n")));
                }
                text
            }
            EventBody::Compaction(record) => {
                state.tokens += record.usage.total_tokens();
                let mut text = self.paint(
                    yellow,
                    &format!(
                        "{indent}⇣ compacted: {} earlier messages summarised, ~{} → ~{} tokens of a {}-token window                          (full messages in `{}`)\n",
                        record.replaced_messages,
                        record.tokens_before,
                        record.tokens_after,
                        record.window_tokens,
                        record.history_variable
                    ),
                );
                if let Some(error) = &record.error {
                    text.push_str(&self.paint(red, &format!("{indent}  {error}\n")));
                }
                text
            }
            EventBody::SubCall(_) => {
                state.sub_calls += 1;
                state.sub_calls_since_cell += 1;
                String::new()
            }
            EventBody::Final(done) if event.depth == 0 => {
                let style = if done.answer.is_some() { green.bold() } else { red.bold() };
                let mut text = self.paint(
                    style,
                    &format!(
                        "■ finished by {} after {} iterations · {} sub-calls · {} tokens · {:.1} s\n",
                        done.finished_by.as_str(),
                        done.iterations,
                        done.sub_calls,
                        done.usage.total.total_tokens(),
                        done.duration_ms / 1000.0
                    ),
                );
                if let Some(error) = &done.error {
                    text.push_str(&self.paint(red, &format!("{error}\n")));
                }
                text
            }
            EventBody::Final(done) => format!(
                "{indent}{} child RLM finished by {} after {} iterations\n",
                self.paint(yellow, "↳"),
                done.finished_by.as_str(),
                done.iterations
            ),
        }
    }
}

fn append_lines(text: &mut String, body: &str, max_lines: usize) {
    let total = body.lines().count();
    for line in body.lines().take(max_lines) {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    if total > max_lines {
        text.push_str(&format!("    … {} more lines\n", total - max_lines));
    }
}

impl TraceSink for Progress {
    fn record(&self, event: &TraceEvent) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = self.render(event, &mut state);
        let mut stderr = std::io::stderr().lock();
        if state.status_shown {
            let _ = write!(stderr, "\r\x1b[2K");
            state.status_shown = false;
        }
        let _ = stderr.write_all(text.as_bytes());
        if matches!(event.body, EventBody::SubCall(_)) {
            let _ = write!(stderr, "  … {} sub-calls, {:.1} s", state.sub_calls, self.started.elapsed().as_secs_f64());
            state.status_shown = true;
        }
        let _ = stderr.flush();
    }

    fn flush(&self) -> rlm::protocol::Result<()> {
        Ok(())
    }
}
