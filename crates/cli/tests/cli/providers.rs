//! `rlm run` with provider specs, a dollar budget and record/replay, as a user runs it.

use rlm_test_support::{Api, Reply, ScriptedServer};

use super::{json, repl, rlm, start, write};

const ROOT: &str = "anthropic:claude-sonnet-4-5";

fn script() -> rlm_test_support::ScriptedServerBuilder {
    ScriptedServer::builder()
        .script(
            "claude-sonnet-4-5",
            [
                Reply::text(repl("print(len(context))")),
                Reply::text(format!("{}\nFINAL_VAR(n)", repl("n = llm_query('How many?')"))),
            ],
        )
        .rule(|r| (r.api == Api::Gemini).then(|| Reply::text("eleven")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_anthropic_run_replays_with_the_network_off() {
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "ctx.txt", "eleven char");
    let recording = dir.path().join("rec.jsonl");
    let server = start(script()).await;
    let run = |base: &str, context: &std::path::Path| {
        let mut command = rlm(None);
        command
            .env("ANTHROPIC_API_KEY", "sk-ant-test")
            .env("GEMINI_API_KEY", "gemini-test")
            .env("ANTHROPIC_BASE_URL", base)
            .env("GEMINI_BASE_URL", base)
            .args(["run", "--json", "--no-trace", "--route", "rlm", "--model", ROOT])
            .args(["--sub-model", "gemini:gemini-2.5-flash", "--query", "How long?"])
            .arg("--context")
            .arg(context);
        command
    };
    let live =
        run(&server.anthropic_base_url(), &context).arg("--max-cost").arg("1").arg("--record").arg(&recording).output();
    let live = live.await.unwrap();
    assert!(live.status.success(), "{}", String::from_utf8_lossy(&live.stderr));
    let live = json(&live);
    assert_eq!(live["answer"], "eleven");
    assert!(live["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{live}");
    assert!(live["usage"]["by_model"][ROOT]["cached_tokens"].as_u64().is_some_and(|t| t > 0), "{live}");
    assert_eq!(server.requests().len(), 3);
    server.shutdown().await;

    let replayed = run("http://127.0.0.1:9", &context).arg("--replay").arg(&recording).output().await.unwrap();
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    let replayed = json(&replayed);
    assert_eq!(replayed["answer"], live["answer"]);
    assert_eq!(replayed["usage"], live["usage"]);

    let other = write(dir.path(), "other.txt", "something else");
    let mismatch = run("http://127.0.0.1:9", &other).arg("--replay").arg(&recording).output();
    let mismatch = mismatch.await.unwrap();
    assert!(!mismatch.status.success());
    let stderr = String::from_utf8_lossy(&mismatch.stderr);
    assert!(stderr.contains("no exchange for this request") && stderr.contains(ROOT), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_missing_keys_and_budgets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "ctx.txt", "x");
    let run = |args: &[&str]| {
        let mut command = rlm(None);
        command.args(["run", "--no-trace", "--query", "q"]).arg("--context").arg(&context).args(args);
        command.output()
    };
    let cases: [(&[&str], &str); 4] = [
        (&["--model", "antropic:claude-sonnet-4-5"], "known providers: openai, anthropic, gemini, local"),
        (&["--model", ROOT], "ANTHROPIC_API_KEY"),
        (&["--model", "gemini:gemini-2.5-pro"], "GEMINI_API_KEY"),
        (&["--model", ROOT, "--max-cost", "0"], "--max-cost must be a positive number"),
    ];
    for (args, expected) in cases {
        let output = run(args).await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{args:?}: {stderr}");
    }
}
