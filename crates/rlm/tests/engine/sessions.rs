//! Sessions (one REPL across queries) and compaction (summarised turns on a small window).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rlm::{CompactionSettings, EventBody, FinishedBy, MemorySink, RouteMode, TraceSink};
use rlm_test_support::{RecordedRequest, Reply, ScriptedServer};

use super::{builder, last_user, repl, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follow_up_query_uses_a_variable_the_previous_one_built() {
    let server = start(ScriptedServer::builder().script(
        "root",
        [
            Reply::text(format!(
                "{}\nFINAL_VAR(top)",
                repl("words = context.split()\ntop = max(sorted(set(words)), key=words.count)")
            )),
            // The second query starts from what the first one left: `words` and `top`.
            Reply::text(format!("{}\nFINAL_VAR(n)", repl("n = words.count(top)"))),
            Reply::text(format!(
                "{}\nFINAL_VAR(summary)",
                repl("summary = f'{len(context_1.split())} {context.split()[0]} {len(history_0)} {history_1[-1][\"role\"]}'")
            )),
        ],
    ))
    .await;
    let rlm = builder(&server, "root").build().unwrap();
    let mut session = rlm.session("b a c a b a").await.unwrap();

    let first = session.ask("Which word is most common?").await.unwrap();
    assert_eq!(first.answer, "a");
    let second = session.ask("How often does it occur?").await.unwrap();
    assert_eq!((second.answer.as_str(), second.finished_by), ("3", FinishedBy::FinalVar));

    // The follow-up was told it continues a session, with the earlier query, its answer and the variables.
    let asked = last_user(&server.requests_for("root")[1]);
    assert!(asked.contains("query 2 of a session"), "{asked}");
    assert!(asked.contains("Which word is most common? -> a"), "{asked}");
    assert!(asked.contains("`top`") && asked.contains("`words`"), "{asked}");
    assert!(!asked.contains("`history_0`,"), "session names are not listed as variables: {asked}");

    // A new context is `context_1`; `context` keeps the first; earlier conversations are `history_N`.
    assert_eq!(session.add_context("x y z w").await.unwrap(), "context_1");
    let third = session.ask("Summarise the session.").await.unwrap();
    // history_0: system, first user message, the reply.
    assert_eq!(third.answer, "4 b 3 assistant");
    assert_eq!(session.turns().len(), 3);
    assert!(second.usage.total.prompt_tokens > 0);
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saved_session_is_restored_without_asking_any_model_again() {
    let server = start(
        ScriptedServer::builder()
            .script(
                "root",
                [
                    Reply::text(format!("{}\nFINAL_VAR(got)", repl("got = llm_query('say hi').upper()"))),
                    Reply::text(format!("{}\nFINAL_VAR(both)", repl("both = got + '/' + context_1"))),
                ],
            )
            .script("sub", [Reply::text("hi there")]),
    )
    .await;
    let rlm = builder(&server, "root").build().unwrap();
    let mut session = rlm.session("ctx").await.unwrap();
    assert_eq!(session.ask("Greet.").await.unwrap().answer, "HI THERE");
    session.add_context("more").await.unwrap();
    let saved = session.saved();
    session.close().await.unwrap();
    let requests_before = server.requests().len();

    let json = serde_json::to_string(&saved).unwrap();
    let mut resumed = rlm.resume_session(serde_json::from_str(&json).unwrap()).await.unwrap();
    // Replaying the cells asked no model: `llm_query` got its recorded answer.
    assert_eq!(server.requests().len(), requests_before);
    assert_eq!(resumed.turns().len(), 1);
    let done = resumed.ask("Combine.").await.unwrap();
    assert_eq!(done.answer, "HI THERE/more");
    assert!(last_user(&server.requests_for("root")[1]).contains("query 2 of a session"));
}

/// Characters per token the scripted server counts with, like a real tokenizer on English text: more generous than
/// the engine's own estimate, so the engine stays on the safe side.
const SERVER_CHARS_PER_TOKEN: usize = 4;
const WINDOW: usize = 4_096;

fn prompt_chars(request: &RecordedRequest) -> usize {
    request.messages.iter().map(|(_, content)| content.chars().count()).sum()
}

/// A model with a 4K window that explores for `turns` turns, printing 1,500 characters each time, then answers.
/// Prompts over its window are refused as a real server would; summary requests get a summary.
async fn small_window_model(turns: usize) -> ScriptedServer {
    let iteration = Arc::new(AtomicUsize::new(0));
    let server = ScriptedServer::builder().rule(move |request| {
        if prompt_chars(request) > WINDOW * SERVER_CHARS_PER_TOKEN {
            return Some(Reply::error(
                400,
                format!("This model's maximum context length is {WINDOW} tokens; the prompt is longer."),
            ));
        }
        if request.system_message().is_some_and(|system| system.contains("condense the working notes")) {
            return Some(Reply::text("Found so far: chunks 0.. were printed; keep going with the next chunk."));
        }
        let turn = iteration.fetch_add(1, Ordering::SeqCst);
        if turn < turns {
            Some(Reply::text(repl(&format!("chunk_{turn} = {turn}\nprint('{turn} ' + 'data ' * 300)"))))
        } else {
            // The full turns are still in the REPL: count the outputs `history` holds.
            Some(Reply::text(format!(
                "{}\nFINAL_VAR(seen)",
                repl("seen = sum('data data' in m['content'] for m in history if m['role'] == 'user')")
            )))
        }
    });
    start(server).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_keeps_a_long_run_going_on_a_small_window() {
    let turns = 12;

    // Without compaction the conversation outgrows the window and the provider refuses it.
    let server = small_window_model(turns).await;
    let rlm = builder(&server, "root")
        .context_window(WINDOW as u64)
        .route(RouteMode::Rlm)
        .compaction(CompactionSettings { enabled: false, threshold: 0.85 })
        .build()
        .unwrap();
    let overflowed = rlm.completion("some context", "Read every chunk.").await.unwrap_err();
    assert!(overflowed.to_string().contains("maximum context length"), "{overflowed}");

    // With it, older turns are summarised and the run reaches its answer.
    let server = small_window_model(turns).await;
    let rlm = builder(&server, "root").context_window(WINDOW as u64).route(RouteMode::Rlm).build().unwrap();
    let sink = Arc::new(MemorySink::new());
    let done = rlm
        .completion_with(
            "some context".into(),
            "Read every chunk.",
            rlm::CancellationToken::new(),
            Some(sink.clone() as Arc<dyn TraceSink>),
        )
        .await
        .unwrap();
    assert_eq!(done.iterations, turns as u32 + 1);
    let seen: usize = done.answer.parse().unwrap();
    assert!(seen >= turns - 2, "history holds {seen} of {turns} outputs");
    let compactions: Vec<_> = sink
        .events()
        .into_iter()
        .filter_map(|event| match event.body {
            EventBody::Compaction(record) => Some(record),
            _ => None,
        })
        .collect();
    assert!(!compactions.is_empty());
    for record in &compactions {
        assert!(record.tokens_after < record.tokens_before, "{record:?}");
        assert_eq!((record.window_tokens, record.history_variable.as_str()), (WINDOW as u64, "history"));
        assert!(record.summary.as_deref().is_some_and(|s| s.starts_with("Found so far")), "{record:?}");
    }
    // Every request fit, and the summary stood in for the older turns.
    let requests = server.requests();
    assert!(requests.iter().all(|r| prompt_chars(r) <= WINDOW * SERVER_CHARS_PER_TOKEN));
    let last = requests.last().unwrap();
    assert!(last.messages[1].1.contains("summarised to save space"), "{:?}", last.messages[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_model_may_answer_a_follow_up_from_a_variable_an_earlier_query_built() {
    let server = start(ScriptedServer::builder().script(
        "root",
        [
            Reply::text(repl("codes = [line for line in context.splitlines() if 'code' in line]\nprint(codes)")),
            Reply::text("FINAL(2)"),
            // The follow-up reads only `codes`, built from the data by the first query: that is evidence.
            Reply::text(repl("print(codes[1])")),
            Reply::text("FINAL(9038)"),
        ],
    ))
    .await;
    let rlm = builder(&server, "root").prompt_profile(rlm::PromptProfile::Small).build().unwrap();
    let mut session = rlm.session("Oslo code 4471\nweather\nPerth code 9038\n").await.unwrap();
    assert_eq!(session.ask("How many lines have a code?").await.unwrap().answer, "2");
    let done = session.ask("What is the code on the second of those lines?").await.unwrap();
    assert_eq!((done.answer.as_str(), done.iterations), ("9038", 2));
}
