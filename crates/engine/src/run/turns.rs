//! The loop of one run: call the root model, run its code, check a proposed answer, feed the output back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use rlm_protocol::{
    CellOutcome, CellRecord, ChatMessage, EventBody, FinishedBy, LimitKind, ModelCallPurpose, ModelCallRecord,
    ModelRequest, ReplSession, Usage,
};

use super::Ending;
use super::answer_policy::AnswerPolicy;
use super::tree::{Scope, Tree, cancellable, with_deadline, writing_trace_meanwhile};
use crate::EngineInner;
use crate::notes;
use crate::parse::{FinalDirective, ParsedResponse, find_final, parse_response};
use crate::prompt::{self, PromptFacts, PromptProfile};

/// How long the one last model call after a limit may take when the run has no time limit (with one, it gets what
/// is left of it: see [`super::tree::deadlines`]).
const FINAL_ANSWER_GRACE: Duration = Duration::from_secs(60);

/// Why a model call produced no response.
pub(crate) enum Interrupted {
    Cancelled,
    TimedOut,
    Failed(rlm_protocol::Error),
}

pub(crate) struct Loop<'a> {
    pub(crate) engine: &'a EngineInner,
    pub(crate) tree: &'a Tree,
    pub(crate) scope: &'a Scope,
    pub(crate) model: &'a str,
    /// Which instructions the model gets.
    pub(crate) profile: PromptProfile,
    /// When an answer ends the run, and the nudges between turns.
    policy: AnswerPolicy,
    /// Messages already recorded in an earlier `model_call` event.
    pub(crate) sent: usize,
    /// Cells run so far in this run; numbers them like a notebook.
    cells_run: u32,
    /// What a session tells the model before its query: earlier queries, contexts and variables.
    pub(crate) intro: Option<String>,
    /// What compaction has replaced so far (see [`crate::compaction`]).
    pub(crate) compaction: crate::compaction::Compactor,
}

/// An answer the model proposed in one turn, before the checks.
struct Proposal {
    answer: String,
    finished_by: FinishedBy,
}

impl<'a> Loop<'a> {
    pub fn new(engine: &'a EngineInner, tree: &'a Tree, scope: &'a Scope, model: &'a str) -> Self {
        let profile = engine.config.prompt.profile.resolve(model);
        Self {
            engine,
            tree,
            scope,
            model,
            profile,
            policy: AnswerPolicy::for_profile(profile),
            sent: 0,
            cells_run: 0,
            intro: None,
            compaction: crate::compaction::Compactor::default(),
        }
    }

    /// Variables an earlier query of the session built from the data: reading them counts as reading the data.
    pub fn treat_as_data(&mut self, names: Vec<String>) {
        self.policy.treat_as_data(names);
    }

    /// Whether the answer rules check `llm_query` prompts for text of the context (see [`TreeHost`]).
    ///
    /// [`TreeHost`]: crate::host::TreeHost
    pub fn checks_grounding(&self) -> bool {
        self.policy.checks_grounding()
    }

    pub async fn drive(&mut self, session: &mut dyn ReplSession, query: &str) -> Ending {
        let limits = &self.engine.config.limits;
        let sub_model = self.engine.config.models.sub_model();
        let facts = PromptFacts {
            context: session.context_info(),
            limits,
            depth: self.scope.depth,
            sub_model,
            sub_window_tokens: self.engine.config.window(sub_model),
        };
        let template = self.engine.config.prompt.system_template.as_deref();
        let mut messages = vec![
            ChatMessage::system(prompt::system_prompt_for(self.profile, template, &facts)),
            ChatMessage::user(prompt::first_user_message(self.profile, query)),
        ];
        if let Some(intro) = &self.intro {
            messages[1].content = format!("{intro}\n\n{}", messages[1].content);
        }
        // Each model call gets the history shared; the call has let go of it by the time the loop appends again.
        let mut messages = Arc::new(messages);

        let mut iterations = 0;
        let limit = loop {
            if iterations >= limits.max_iterations {
                break LimitKind::MaxIterations;
            }
            if let Some(limit) = self.tree.limit_reached(self.engine) {
                break limit;
            }
            iterations += 1;
            self.scope.iteration.store(iterations, Ordering::Relaxed);
            if let Err(Interrupted::Cancelled) = self.compact_if_needed(session, Arc::make_mut(&mut messages)).await {
                return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled");
            }

            let response = match self.call_model(&messages, ModelCallPurpose::Iteration, self.tree.work_deadline).await
            {
                Ok(response) => response,
                Err(Interrupted::Cancelled) => return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled"),
                Err(Interrupted::TimedOut) => break LimitKind::Timeout,
                Err(Interrupted::Failed(rlm_protocol::Error::Budget(_))) => break LimitKind::MaxCost,
                Err(Interrupted::Failed(err)) => {
                    return Ending::stopped(FinishedBy::Error, iterations, format!("the root model failed: {err}"));
                }
            };
            Arc::make_mut(&mut messages).push(ChatMessage::assistant(response.clone()));
            let parsed = parse_response(&response);
            let repeated = self.policy.observe_reply(&response, &parsed.code_blocks);

            let mut outcomes = Vec::with_capacity(parsed.code_blocks.len());
            for code in &parsed.code_blocks {
                let started_at = Utc::now();
                let cell = writing_trace_meanwhile(self.tree.trace.as_ref(), session.run_cell(code));
                let outcome = match cancellable(&self.tree.cancel, cell).await {
                    None => return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled"),
                    Some(Err(err)) => {
                        return Ending::stopped(FinishedBy::Error, iterations, format!("the REPL failed: {err}"));
                    }
                    Some(Ok(outcome)) => outcome,
                };
                let view = notes::view_cell(&outcome, limits.max_output_chars);
                self.cells_run += 1;
                self.record(started_at, cell_record(self.cells_run, code, &outcome, &view));
                outcomes.push((view, outcome));
            }

            self.policy
                .observe_cells(parsed.code_blocks.iter().map(String::as_str).zip(outcomes.iter().map(|(_, o)| o)));
            let mut notes = Vec::new();
            let proposal = match self.proposal(&parsed, &outcomes, session, &mut notes).await {
                Ok(proposal) => proposal,
                Err(err) => return Ending::stopped(FinishedBy::Error, iterations, format!("the REPL failed: {err}")),
            };
            if let Some(proposal) = proposal {
                match self.policy.refusal(&proposal.answer, query, !outcomes.is_empty(), self.scope) {
                    None => return Ending::answered(proposal.answer, proposal.finished_by, iterations),
                    Some(refusal) => notes.push(self.policy.refusal_note(refusal, &proposal.answer, query)),
                }
            } else if outcomes.is_empty() {
                notes.push(self.policy.no_code_note(query));
            }
            self.policy.end_turn(outcomes.iter().map(|(view, _)| view), self.scope, &mut notes);
            if repeated {
                let failure = outcomes.iter().find_map(|(_, outcome)| outcome.error.as_ref());
                match self.policy.repeat_nudge(query, !parsed.code_blocks.is_empty(), failure) {
                    Some(nudge) => notes.push(nudge),
                    None => break LimitKind::Repetition,
                }
            }
            let cells: Vec<(notes::CellView, &CellOutcome)> =
                outcomes.iter().map(|(view, outcome)| (view.clone(), outcome)).collect();
            let mut observation = notes::observation(&cells, &notes);
            if let Some(reminder) = self.policy.reminder(query) {
                observation.push_str("\n\n");
                observation.push_str(&reminder);
            }
            Arc::make_mut(&mut messages).push(ChatMessage::user(observation));
        };
        self.final_answer_after(limit, session, messages, iterations, query).await
    }

    /// The answer this turn proposes, if any: set by code (in a cell that completed without an error), or given
    /// with `FINAL`/`FINAL_VAR` in the text. Problems that are the model's to fix become notes.
    async fn proposal(
        &self,
        parsed: &ParsedResponse,
        outcomes: &[(notes::CellView, CellOutcome)],
        session: &mut dyn ReplSession,
        notes: &mut Vec<String>,
    ) -> Result<Option<Proposal>, rlm_protocol::Error> {
        for (_, outcome) in outcomes.iter().filter(|(_, o)| o.error.is_none()) {
            if let Some(answer) = &outcome.answer {
                return Ok(Some(Proposal { answer: answer.clone(), finished_by: FinishedBy::Answer }));
            }
            if let Some(value) = outcome.final_var.as_ref().and_then(|fv| fv.value.clone()) {
                return Ok(Some(Proposal { answer: value, finished_by: FinishedBy::FinalVar }));
            }
        }
        let any_error = outcomes.iter().any(|(_, o)| o.error.is_some());
        match find_final(&parsed.prose) {
            None => Ok(None),
            Some(_) if any_error => {
                notes.push(notes::rejected_final_note());
                Ok(None)
            }
            Some(FinalDirective::Answer(answer)) => Ok(Some(Proposal { answer, finished_by: FinishedBy::Final })),
            Some(FinalDirective::Variable(name)) => match session.get_variable(&name).await? {
                Some(value) => Ok(Some(Proposal { answer: value, finished_by: FinishedBy::FinalVar })),
                None => {
                    let available = session.variable_names().await.unwrap_or_default();
                    notes.push(notes::missing_variable_note(&name, &available));
                    Ok(None)
                }
            },
        }
    }

    /// A limit ran out: ask the model once for its best answer.
    async fn final_answer_after(
        &mut self,
        limit: LimitKind,
        session: &mut dyn ReplSession,
        mut messages: Arc<Vec<ChatMessage>>,
        iterations: u32,
        query: &str,
    ) -> Ending {
        if let Err(Interrupted::Cancelled) = self.compact_if_needed(session, Arc::make_mut(&mut messages)).await {
            return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled");
        }
        Arc::make_mut(&mut messages).push(ChatMessage::user(notes::limit_message(limit)));
        let deadline = Some(self.tree.deadline.unwrap_or_else(|| Instant::now() + FINAL_ANSWER_GRACE));
        let mut ending =
            Ending { answer: None, finished_by: FinishedBy::Limit, limit: Some(limit), iterations, error: None };
        match self.call_model(&messages, ModelCallPurpose::FinalAnswer, deadline).await {
            Ok(response) => {
                let parsed = parse_response(&response);
                // No code runs any more, so a FINAL the model put inside a code block counts too.
                let directive = find_final(&parsed.prose).or_else(|| find_final(&response));
                let answer = match directive {
                    Some(FinalDirective::Answer(answer)) => Some(answer),
                    Some(FinalDirective::Variable(name)) => session.get_variable(&name).await.ok().flatten(),
                    None => Some(parsed.prose.trim().to_owned()),
                };
                let refused = match &answer {
                    None => Some("it named a variable that does not exist".to_owned()),
                    Some(answer) => {
                        // No code can run any more: a second look could only end the run without an answer.
                        self.policy
                            .final_refusal(answer, query, false, self.scope)
                            .map(|refusal| refusal.reason().to_owned())
                    }
                };
                match (answer, refused) {
                    (Some(answer), None) => ending.answer = Some(answer),
                    (_, Some(reason)) => {
                        ending.error = Some(format!(
                            "reached {} without a usable answer: the model's last answer was refused because {reason}",
                            limit.describe()
                        ));
                    }
                    (None, None) => {
                        ending.error = Some(format!("reached {} and the model gave no final answer", limit.describe()));
                    }
                }
            }
            Err(Interrupted::Cancelled) => {
                return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled");
            }
            Err(Interrupted::TimedOut) => {
                ending.error = Some(format!("reached {}; asking for a final answer timed out", limit.describe()));
            }
            Err(Interrupted::Failed(err)) => {
                ending.error = Some(format!("reached {}; asking for a final answer failed: {err}", limit.describe()));
            }
        }
        ending
    }

    pub async fn call_model(
        &mut self,
        messages: &Arc<Vec<ChatMessage>>,
        purpose: ModelCallPurpose,
        deadline: Option<Instant>,
    ) -> Result<String, Interrupted> {
        let request = ModelRequest {
            model: self.model.to_owned(),
            messages: Arc::clone(messages),
            max_output_tokens: self.engine.config.max_output_tokens(self.profile),
            temperature: self.engine.config.temperature,
        };
        let started_at = Utc::now();
        let started = Instant::now();
        let call = writing_trace_meanwhile(self.tree.trace.as_ref(), self.tree.model.complete(request));
        let outcome = match cancellable(&self.tree.cancel, with_deadline(deadline, call)).await {
            None => Err(Interrupted::Cancelled),
            Some(None) => Err(Interrupted::TimedOut),
            Some(Some(Err(err))) => Err(Interrupted::Failed(err)),
            Some(Some(Ok(response))) => Ok(response),
        };
        let mut record = ModelCallRecord {
            purpose,
            model: self.model.to_owned(),
            new_messages: messages[self.sent.min(messages.len())..].to_vec(),
            history_len: messages.len(),
            response: None,
            usage: Usage::default(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error: None,
        };
        self.sent = messages.len();
        let result = match outcome {
            Ok(response) => {
                self.scope.add_usage(self.tree, self.model, response.usage);
                record.usage = response.usage;
                record.response = Some(response.content.clone());
                Ok(response.content)
            }
            Err(interrupted) => {
                record.error = Some(match &interrupted {
                    Interrupted::Cancelled => "cancelled".to_owned(),
                    Interrupted::TimedOut => "time limit reached".to_owned(),
                    Interrupted::Failed(err) => err.to_string(),
                });
                Err(interrupted)
            }
        };
        self.record(started_at, EventBody::ModelCall(record));
        result
    }

    fn record(&self, ts: chrono::DateTime<Utc>, body: EventBody) {
        self.tree.trace.record(&self.scope.event(ts, body));
    }
}

fn cell_record(index: u32, code: &str, outcome: &CellOutcome, view: &notes::CellView) -> EventBody {
    EventBody::Cell(CellRecord {
        index,
        code: code.to_owned(),
        stdout: view.stdout.clone(),
        stderr: view.stderr.clone(),
        error: outcome.error.clone(),
        duration_ms: outcome.duration.as_secs_f64() * 1000.0,
        truncated_chars: view.truncated_chars,
    })
}
