//! Whole runs with native providers, costs, a dollar budget, the response cache and record/replay, against the
//! scripted server's Anthropic and Gemini dialects.

use std::path::Path;

use rlm::{
    CacheMode, EventBody, FinishedBy, LimitKind, ProviderSettings, Rlm, RlmBuilder, RlmError, RouteMode, TraceEvent,
    TraceTarget,
};
use rlm_test_support::{Api, Reply, ScriptedServer};

use super::{read_trace, repl, start};

fn settings(anthropic_url: &str, gemini_url: &str) -> ProviderSettings {
    let mut settings = ProviderSettings::default();
    settings.anthropic.http.base_url = anthropic_url.to_owned();
    settings.anthropic.http.api_key = Some("sk-ant-test".into());
    settings.gemini.http.base_url = gemini_url.to_owned();
    settings.gemini.http.api_key = Some("gemini-test".into());
    settings
}

fn builder(server: &ScriptedServer, root: &str, sub: &str) -> RlmBuilder {
    Rlm::builder()
        .provider_settings(settings(&server.anthropic_base_url(), &server.gemini_base_url()))
        .base_url(server.base_url())
        .model(root)
        .sub_model(sub)
        // The contexts here fit Claude's window; these tests are about the loop.
        .route(RouteMode::Rlm)
        .trace(TraceTarget::Disabled)
}

/// Event types with their models and usage, the shape a replay must reproduce.
fn shape(events: &[TraceEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| match &event.body {
            EventBody::Metadata(m) => format!("metadata {}", m.root_model),
            EventBody::ModelCall(call) => format!("model_call {} {:?}", call.model, call.usage),
            EventBody::Cell(cell) => format!("cell {}", cell.code),
            EventBody::SubCall(sub) => format!("sub_call {} {:?}", sub.model, sub.response),
            EventBody::Compaction(record) => format!("compaction {}", record.replaced_messages),
            EventBody::Final(done) => format!("final {:?} {:?}", done.answer, done.finished_by),
        })
        .collect()
}

const ROOT: &str = "anthropic:claude-sonnet-4-5";
const SUB: &str = "gemini:gemini-2.5-flash";

fn three_turns(server: rlm_test_support::ScriptedServerBuilder) -> rlm_test_support::ScriptedServerBuilder {
    server
        .script(
            "claude-sonnet-4-5",
            [
                Reply::text(repl("n = len(context)\nprint(n)")),
                Reply::text(repl("print(llm_query('Say the number 7'))")),
                Reply::text("FINAL(7 and 11)"),
            ],
        )
        .rule(|request| (request.api == Api::Gemini).then(|| Reply::text("7")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_anthropic_root_reads_its_conversation_from_the_cache_and_costs_are_reported() {
    let server = start(three_turns(ScriptedServer::builder())).await;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let rlm = builder(&server, ROOT, SUB).trace(TraceTarget::File(trace.clone())).build().unwrap();
    let done = rlm.completion("eleven chars", "What numbers?").await.unwrap();
    assert_eq!(done.answer, "7 and 11");

    let calls: Vec<rlm::Usage> = read_trace(&trace)
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ModelCall(call) => Some(call.usage),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].cached_tokens, 0);
    assert!(calls[0].cache_write_tokens > 0, "{:?}", calls[0]);
    for (turn, usage) in calls.iter().enumerate().skip(1) {
        assert!(usage.cached_tokens * 2 > usage.prompt_tokens, "turn {} reads from the cache: {usage:?}", turn + 1);
    }
    let requests = server.requests();
    let root_requests: Vec<_> = requests.iter().filter(|r| r.api == Api::Anthropic).collect();
    assert!(root_requests.iter().all(|r| r.body()["system"][0]["cache_control"]["type"] == "ephemeral"));
    assert_eq!(requests.iter().filter(|r| r.api == Api::Gemini).count(), 1);

    let root = &done.usage.by_model[ROOT];
    let sub = &done.usage.by_model[SUB];
    assert!(root.cost_usd.is_some_and(|c| c > 0.0) && sub.cost_usd.is_some_and(|c| c > 0.0), "{:?}", done.usage);
    let total = done.cost_usd.unwrap();
    assert!((total - root.cost_usd.unwrap() - sub.cost_usd.unwrap()).abs() < 1e-12);
    // Reading from the cache is cheaper than sending every turn at the full prompt price.
    let uncached: f64 =
        calls.iter().map(|u| (u.prompt_tokens as f64 * 0.003 + u.completion_tokens as f64 * 0.015) / 1000.0).sum();
    assert!(root.cost_usd.unwrap() < uncached, "{} < {uncached}", root.cost_usd.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_over_the_tree_stops_before_an_unaffordable_sub_call_and_keeps_the_best_answer() {
    let server = start(
        ScriptedServer::builder()
            .script(
                "claude-sonnet-4-5",
                [
                    Reply::text(repl("print(llm_query('Summarise everything'))")).with_usage(1000, 100, 0),
                    Reply::text("FINAL(best so far)").with_usage(1200, 20, 1000),
                ],
            )
            .rule(|_| Some(Reply::text("should never be asked"))),
    )
    .await;
    // The sub-model's 1,000-token output cap alone would cost $0.075 at claude-opus-4's price.
    let rlm = builder(&server, ROOT, "anthropic:claude-opus-4")
        .limits(rlm::Limits { max_output_tokens: Some(1000), ..rlm::Limits::default() })
        .max_cost(0.05)
        .build()
        .unwrap();
    let done = rlm.completion("ctx", "q").await.unwrap();
    assert_eq!((done.finished_by, done.limit), (FinishedBy::Limit, Some(LimitKind::MaxCost)));
    assert_eq!(done.answer, "best so far");
    assert!(server.requests().iter().all(|r| r.model == "claude-sonnet-4-5"), "the sub-call was never sent");
    // (The scripted Anthropic dialect joins consecutive user messages into one turn, as the API does.)
    let observation = server.requests()[1].last_user_message().unwrap().to_owned();
    assert!(observation.contains("would cost about $0.07"), "{observation}");
    assert!(done.cost_usd.unwrap() <= 0.05, "{:?}", done.cost_usd);

    // A budget the first call already crosses: the run stops right after it.
    let server = start(
        ScriptedServer::builder().script("claude-sonnet-4-5", [Reply::text(repl("x = 1")).with_usage(100_000, 10, 0)]),
    )
    .await;
    let err = builder(&server, ROOT, ROOT).max_cost(0.10).build().unwrap().completion("ctx", "q").await.unwrap_err();
    let RlmError::Failed { completion, message } = err else { panic!("a run without an answer fails") };
    assert_eq!((completion.finished_by, completion.limit), (FinishedBy::Limit, Some(LimitKind::MaxCost)));
    assert!(message.contains("cost budget"), "{message}");
    assert_eq!(server.requests().len(), 1, "nothing after the crossing call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_keeps_room_for_the_final_answer_of_the_root_loop() {
    let server = start(ScriptedServer::builder().script(
        "claude-sonnet-4-5",
        [
            // About 5,000 tokens of output make the next turn's prompt cost about $0.015 more.
            Reply::text(repl("print('x' * 20000)")).with_usage(1000, 100, 0),
            Reply::text("FINAL(best so far)").with_usage(6000, 20, 1000),
            Reply::text("FINAL(never asked)"),
        ],
    ))
    .await;
    // Each turn's estimate includes the 1,000-token cap at $0.015; the second turn (about $0.03) no longer leaves
    // room for a final answer of the same size in $0.05, the final answer alone fits.
    let rlm = builder(&server, ROOT, ROOT)
        .limits(rlm::Limits { max_output_tokens: Some(1000), ..rlm::Limits::default() })
        .max_cost(0.05)
        .build()
        .unwrap();
    let done = rlm.completion("ctx", "q").await.unwrap();
    assert_eq!((done.finished_by, done.limit), (FinishedBy::Limit, Some(LimitKind::MaxCost)));
    assert_eq!(done.answer, "best so far");
    assert_eq!(done.iterations, 2, "the second turn started; its call was refused");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "turn 2 was never sent; the final answer was");
    assert!(requests[1].last_user_message().unwrap().contains("cost budget"));
    assert!(done.cost_usd.unwrap() <= 0.05, "{:?}", done.cost_usd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budgets_need_prices_and_specs_are_checked_before_any_request() {
    let server = start(ScriptedServer::builder()).await;
    let err = builder(&server, "my-own-model", "my-own-model").max_cost(1.0).build().err().unwrap().to_string();
    assert!(err.contains("my-own-model has none") && err.contains("--prices"), "{err}");
    let err = builder(&server, "antropic:claude-sonnet-4-5", SUB).build().err().unwrap().to_string();
    assert!(err.contains("known providers: openai, anthropic, gemini, local"), "{err}");
    let mut keyless = settings(&server.anthropic_base_url(), &server.gemini_base_url());
    keyless.gemini.http.api_key = None;
    let err = builder(&server, ROOT, SUB).provider_settings(keyless).build().err().unwrap().to_string();
    assert!(err.contains("GEMINI_API_KEY"), "{err}");
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_response_cache_serves_a_repeated_run_without_the_network() {
    let server = start(three_turns(ScriptedServer::builder())).await;
    let cache = tempfile::tempdir().unwrap();
    let run = || builder(&server, ROOT, SUB).temperature(0.0).cache(cache.path(), CacheMode::Deterministic).build();
    let first = run().unwrap().completion("eleven chars", "What numbers?").await.unwrap();
    let sent = server.requests().len();
    assert_eq!(first.usage.total.cache_hits, 0);
    let second = run().unwrap().completion("eleven chars", "What numbers?").await.unwrap();
    assert_eq!(second.answer, first.answer);
    assert_eq!(server.requests().len(), sent, "every call was a hit");
    assert_eq!(second.usage.total.cache_hits, second.usage.total.calls);
    assert_eq!(second.cost_usd, Some(0.0));
}

fn run_shape(path: &Path) -> Vec<String> {
    shape(&read_trace(path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_run_replays_with_the_network_off() {
    let server = start(three_turns(ScriptedServer::builder())).await;
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("exchanges.jsonl");
    let (live_trace, replay_trace) = (dir.path().join("live.jsonl"), dir.path().join("replay.jsonl"));
    let live = builder(&server, ROOT, SUB)
        .record(&recording)
        .trace(TraceTarget::File(live_trace.clone()))
        .build()
        .unwrap()
        .completion("eleven chars", "What numbers?")
        .await
        .unwrap();
    server.shutdown().await;

    // Every endpoint points at a port nobody listens on: any network use would fail.
    let dead = "http://127.0.0.1:9";
    let replay = || {
        Rlm::builder()
            .provider_settings(settings(dead, dead))
            .base_url(format!("{dead}/v1"))
            .model(ROOT)
            .sub_model(SUB)
            .route(RouteMode::Rlm)
            .replay(&recording)
    };
    let replayed = replay()
        .trace(TraceTarget::File(replay_trace.clone()))
        .build()
        .unwrap()
        .completion("eleven chars", "What numbers?")
        .await
        .unwrap();
    assert_eq!(replayed.answer, live.answer);
    assert_eq!(replayed.usage, live.usage);
    assert_eq!(run_shape(&replay_trace), run_shape(&live_trace));

    let err = replay().trace(TraceTarget::Disabled).build().unwrap().completion("other text", "q").await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("no exchange for this request") && message.contains(ROOT), "{message}");
}
