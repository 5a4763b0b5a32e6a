//! Transcripts recorded from real small models (Qwen2.5-Coder 0.5B and 1.5B on llama.cpp), replayed through the
//! scripted server against today's runtime. Each one failed when it was recorded; each must now end with the right
//! answer or with a clear failure, never with a placeholder or a guess. See `fixtures/small-models/` and
//! `scripts/fixture-from-trace.py`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use rlm::{Completion, FinishedBy, LimitKind, RlmError, RouteMode};
use rlm_test_support::{RecordedRequest, Reply, ScriptedServer};
use serde::Deserialize;

use super::builder;

#[derive(Debug, Deserialize)]
struct Fixture {
    name: String,
    failure_modes: Vec<String>,
    model: String,
    query: String,
    expected: String,
    context: FixtureContext,
    turns: Vec<String>,
    final_answer: Option<String>,
    sub_answers: Vec<String>,
    outcome_when_recorded: Option<RecordedOutcome>,
}

/// The context: the text itself, or the `rlm bench sniah` task that regenerates it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FixtureContext {
    Inline { inline: String },
    Sniah { sniah: SniahTask },
}

#[derive(Debug, Deserialize)]
struct SniahTask {
    seed: u64,
    sizes: Vec<String>,
    tasks: usize,
    id: String,
}

impl FixtureContext {
    fn text(&self) -> String {
        match self {
            Self::Inline { inline } => inline.clone(),
            Self::Sniah { sniah } => {
                let sizes: Vec<usize> = sniah.sizes.iter().map(|s| rlm_bench::sniah::parse_size(s).unwrap()).collect();
                let tasks = rlm_bench::sniah::generate(&sizes, sniah.tasks, sniah.seed);
                tasks.into_iter().find(|task| task.id == sniah.id).expect("the task exists").context
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct RecordedOutcome {
    answer: Option<String>,
}

fn fixtures() -> BTreeMap<String, Fixture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small-models");
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("fixture directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let fixture: Fixture =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("a fixture");
            assert!(!fixture.failure_modes.is_empty(), "{}: say what went wrong", fixture.name);
            found.insert(fixture.name.clone(), fixture);
        }
    }
    found
}

/// Whether `answer` gives `expected` (a 7-digit value) and no other 7-digit number.
fn gives(answer: &str, expected: &str) -> bool {
    let numbers: Vec<&str> = answer.split(|c: char| !c.is_ascii_digit()).filter(|run| run.len() == 7).collect();
    !numbers.is_empty() && numbers.iter().all(|n| *n == expected)
}

/// Replays the recorded replies: each loop turn gets the next recorded turn, and the request for a final answer after
/// a limit gets the recorded final answer, whenever the runtime asks for it. When the recording runs out the model
/// repeats its last reply, as a model asked once more tends to; `llm_query` answers likewise.
async fn replay(fixture: &Fixture) -> (Result<Completion, RlmError>, Vec<RecordedRequest>) {
    let sub_model = format!("{}-replay-sub", fixture.model);
    let turns = Arc::new(Mutex::new(fixture.turns.iter().cloned().collect::<VecDeque<_>>()));
    let subs = Arc::new(Mutex::new(fixture.sub_answers.iter().cloned().collect::<VecDeque<_>>()));
    let last_turn = fixture.turns.last().cloned().unwrap_or_default();
    let final_answer = fixture.final_answer.clone().unwrap_or_else(|| last_turn.clone());
    let last_sub = fixture.sub_answers.last().cloned().unwrap_or_default();
    let root = fixture.model.clone();
    let server = ScriptedServer::builder()
        .rule(move |request| {
            let text = if request.model != root {
                subs.lock().unwrap().pop_front().unwrap_or_else(|| last_sub.clone())
            } else if request.last_user_message().is_some_and(|m| m.starts_with("You have reached")) {
                final_answer.clone()
            } else {
                turns.lock().unwrap().pop_front().unwrap_or_else(|| last_turn.clone())
            };
            Some(Reply::text(text))
        })
        .start()
        .await
        .expect("scripted server starts");
    let rlm = builder(&server, &fixture.model)
        .sub_model(&sub_model)
        .route(RouteMode::Rlm)
        .max_iterations(u32::try_from(fixture.turns.len()).expect("small"))
        .build()
        .expect("builds");
    let outcome = rlm.completion(fixture.context.text(), &fixture.query).await;
    let requests = server.requests();
    server.shutdown().await;
    (outcome, requests)
}

/// The replay ended without an answer, and says why.
fn failed_clearly(name: &str, outcome: Result<Completion, RlmError>) -> (Completion, String) {
    match outcome {
        Err(RlmError::Failed { message, completion }) => {
            assert!(completion.answer.is_empty(), "{name}: a failed run has no answer");
            assert!(!message.is_empty(), "{name}: the failure says why");
            (*completion, message)
        }
        Ok(completion) => panic!("{name}: expected a clear failure, got the answer {:?}", completion.answer),
        Err(other) => panic!("{name}: the run could not even start: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_recorded_failure_now_ends_right_or_fails_clearly() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 5, "fixtures went missing: {:?}", fixtures.keys());
    for fixture in fixtures.values() {
        let (outcome, _) = replay(fixture).await;
        match &outcome {
            Ok(completion) => assert!(
                gives(&completion.answer, &fixture.expected),
                "{}: answered {:?}, expected {} or a clear failure",
                fixture.name,
                completion.answer,
                fixture.expected
            ),
            Err(RlmError::Failed { completion, .. }) => assert!(completion.answer.is_empty(), "{}", fixture.name),
            Err(other) => panic!("{}: {other}", fixture.name),
        }
        // When recorded, every one of these ended with an answer that was wrong or no answer at all.
        let recorded = fixture.outcome_when_recorded.as_ref().and_then(|o| o.answer.clone());
        assert!(recorded.is_none_or(|answer| !gives(&answer, &fixture.expected)), "{}", fixture.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bare_show_vars_runs_as_code_and_the_key_is_not_taken_for_the_answer() {
    let fixtures = fixtures();
    let fixture = &fixtures["bare-show-vars-then-key-as-answer"];
    let (outcome, requests) = replay(fixture).await;
    let (completion, message) = failed_clearly(&fixture.name, outcome);
    // The bare `SHOW_VARS()` ran (it used to be ignored as prose) and the repeats were cut short.
    let second_turn = requests[1].last_user_message().unwrap_or_default().to_owned();
    assert!(second_turn.contains("No variables created yet."), "{second_turn}");
    assert_eq!(completion.limit, Some(LimitKind::Repetition), "{message}");
    assert!(requests.iter().any(|r| r.last_user_message().is_some_and(|m| m.contains("Do something different"))
        || r.last_user_message().is_some_and(|m| m.contains("If that output shows the answer"))));
    // 'orchid' named the key; no code ever read the context, so nothing counts as evidence.
    assert!(message.contains("no code had shown it any evidence"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_placeholder_none_after_a_missed_phrase_is_refused() {
    let fixtures = fixtures();
    let fixture = &fixtures["exact-phrase-miss-then-none"];
    let (outcome, requests) = replay(fixture).await;
    let (completion, message) = failed_clearly(&fixture.name, outcome);
    assert_eq!(completion.finished_by, FinishedBy::Limit);
    assert!(message.contains("placeholder") || message.contains("empty"), "{message}");
    // The model was told it repeated itself, with a concrete search to try instead.
    let nudged =
        requests.iter().filter_map(RecordedRequest::last_user_message).any(|m| m.contains("search(\"quiet-meadow\")"));
    assert!(nudged, "no targeted nudge was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_invented_by_a_context_free_llm_query_is_refused() {
    let fixtures = fixtures();
    let fixture = &fixtures["llm-query-without-context"];
    let (outcome, requests) = replay(fixture).await;
    let (_, message) = failed_clearly(&fixture.name, outcome);
    let notes: Vec<&str> = requests.iter().filter_map(RecordedRequest::last_user_message).collect();
    assert!(notes.iter().any(|m| m.contains("contained no text from `context`")), "{notes:#?}");
    assert!(notes.iter().any(|m| m.contains("Your answer was not accepted: it came from llm_query")), "{notes:#?}");
    assert!(message.contains("llm_query"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bare_statement_with_a_stray_fence_runs_and_repeats_are_cut_short() {
    let fixtures = fixtures();
    let fixture = &fixtures["stray-fence-and-repeats"];
    let (outcome, requests) = replay(fixture).await;
    // Every turn's `print(search(...))` ran (before, four of six were dropped as prose), so the value was in the
    // output from the second turn on; this model still never answered, and the run says so.
    let second_turn = requests[1].last_user_message().unwrap_or_default().to_owned();
    assert!(second_turn.contains("5279348"), "{second_turn}");
    let (completion, message) = failed_clearly(&fixture.name, outcome);
    assert_eq!(completion.limit, Some(LimitKind::Repetition), "{message}");
    assert!(completion.iterations < u32::try_from(fixture.turns.len()).unwrap(), "repeats end the run early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn title_case_final_after_the_value_was_printed_is_the_answer() {
    let fixtures = fixtures();
    let fixture = &fixtures["title-case-final-next-to-code"];
    let (outcome, requests) = replay(fixture).await;
    // Turn 1 printed the value next to a guess `Final(42)`, which is refused; turn 2 answers `Final(5313471)` next
    // to a context-free llm_query: the value was in output already seen, so it counts.
    let first_note = requests[1].last_user_message().unwrap_or_default().to_owned();
    assert!(first_note.contains("5313471") && first_note.contains("not accepted"), "{first_note}");
    let completion = outcome.expect("answered");
    assert_eq!((completion.answer.as_str(), completion.iterations), ("5313471", 2));
    assert_eq!(completion.finished_by, FinishedBy::Final);
}
