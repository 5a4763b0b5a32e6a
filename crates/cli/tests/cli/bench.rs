//! `rlm bench` end to end, one test per task family: the binary generates the tasks, a scripted model answers the
//! first task of a size right (in prose) and the second one wrong or partly (a hedge for labels), and the table and
//! the JSON lines must show the scores the family's scoring gives those answers.

use std::path::Path;

use rlm_test_support::{Reply, ScriptedServer};
use serde_json::Value;

use super::{repl, rlm, start};

/// One generated task as `--write-tasks` writes it.
struct WrittenTask {
    id: String,
    query: String,
    context_start: String,
    right: String,
    wrong: String,
    wrong_score: f64,
}

/// A right answer in prose, and a wrong one with the score it must get.
fn answers(expected: &Value) -> (String, String, f64) {
    let strings =
        |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect() };
    match expected["kind"].as_str().unwrap() {
        "number" => {
            let value = expected["value"].as_i64().unwrap();
            // Off by 3: OOLONG's 0.75^3.
            (format!("The answer is {value}."), format!("{} lines", value + 3), 0.421_875)
        }
        "label" => {
            let answer = expected["answer"].as_str().unwrap();
            let candidates = strings(&expected["candidates"]);
            assert!(candidates.len() >= 2, "{expected}");
            // Naming every candidate is a hedge, worth nothing.
            (format!("**{answer}**."), candidates.join(" or "), 0.0)
        }
        "needle" => {
            let value = expected["value"].as_str().unwrap();
            let other = if value == "1234567" { "7654321" } else { "1234567" };
            (format!("The special magic number is {value}."), format!("{value} or {other}"), 0.0)
        }
        "set" => {
            let items = strings(&expected["items"]);
            // One item of n: precision 1, recall 1/n.
            let n = items.len() as f64;
            (items.join(", "), items[0].clone(), 2.0 / (n + 1.0))
        }
        "pairs" => {
            let pairs: Vec<(String, String)> = expected["pairs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
                .collect();
            let right = pairs.iter().rev().map(|(a, b)| format!("({b}, {a})")).collect::<Vec<_>>().join("\n");
            let n = pairs.len() as f64;
            (right, format!("{} - {}", pairs[0].0, pairs[0].1), 2.0 / (n + 1.0))
        }
        other => panic!("unknown kind {other}"),
    }
}

fn read_tasks(dir: &Path) -> Vec<WrittenTask> {
    std::fs::read_to_string(dir.join("tasks.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let task: Value = serde_json::from_str(line).unwrap();
            let id = task["id"].as_str().unwrap().to_owned();
            let context = std::fs::read_to_string(dir.join(format!("{id}.txt"))).unwrap();
            let (right, wrong, wrong_score) = answers(&task["expected"]);
            WrittenTask {
                id,
                query: task["query"].as_str().unwrap().to_owned(),
                context_start: context.chars().take(200).collect(),
                right,
                wrong,
                wrong_score,
            }
        })
        .collect()
}

/// A model that answers the first task right and the second wrong: as plain text when it is given the whole text
/// (the direct call of the base system), through the REPL and FINAL_VAR otherwise (the RLM).
fn scripted_model(tasks: Vec<WrittenTask>) -> rlm_test_support::ScriptedServerBuilder {
    ScriptedServer::builder().rule(move |request| {
        let all: String = request.messages.iter().map(|(_, content)| content.as_str()).collect::<Vec<_>>().join("\n");
        let Some((index, task)) = tasks.iter().enumerate().find(|(_, t)| all.contains(&t.query)) else {
            return Some(Reply::text("no task matches this request"));
        };
        let answer = if index == 0 { &task.right } else { &task.wrong };
        let direct = request.last_user_message().is_some_and(|m| m.starts_with("Text:\n"));
        if direct {
            assert!(all.contains(&task.context_start), "the direct call carries the context");
            Some(Reply::text(answer.clone()))
        } else {
            Some(Reply::text(format!("{}\nFINAL_VAR(reply)", repl(&format!("reply = {answer:?}")))))
        }
    })
}

/// Runs `rlm bench` for `family` on two 8k tasks, both systems, and checks the table and the JSON lines.
async fn bench_end_to_end(family: &str, alias: bool) {
    let dir = tempfile::tempdir().unwrap();
    let tasks_dir = dir.path().join("tasks");
    let family_args: Vec<&str> = if alias { vec!["sniah"] } else { vec!["--family", family] };
    let common = ["--sizes", "8k", "--tasks", "2", "--seed", "7"];
    let output = rlm(None)
        .arg("bench")
        .args(&family_args)
        .args(common)
        .arg("--write-tasks")
        .arg(&tasks_dir)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tasks = read_tasks(&tasks_dir);
    assert_eq!(
        tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [format!("{family}-8k-1"), format!("{family}-8k-2")]
    );
    let expected_scores = [1.0, tasks[1].wrong_score];
    let answers = [tasks[0].right.clone(), tasks[1].wrong.clone()];
    let ids = [tasks[0].id.clone(), tasks[1].id.clone()];
    let server = start(scripted_model(tasks)).await;

    let json = dir.path().join("results.jsonl");
    let output = rlm(Some(&server))
        .arg("bench")
        .args(&family_args)
        .args(common)
        .args(["--systems", "base,rlm", "--model", "root", "--json"])
        .arg(&json)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let results: Vec<Value> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), 4, "{results:?}");
    for result in &results {
        let index = ids.iter().position(|id| result["task"] == id.as_str()).unwrap();
        assert_eq!(result["family"], family);
        assert_eq!(result["size"], "8k");
        assert_eq!(result["answer"], answers[index].as_str(), "{result}");
        let score = result["score"].as_f64().unwrap();
        assert!((score - expected_scores[index]).abs() < 1e-9, "{result}");
        assert_eq!(result["correct"], index == 0, "{result}");
        let path = if result["system"] == "base" { "direct" } else { "rlm" };
        assert_eq!(result["path"], path, "{result}");
    }

    let mean = (1.0 + expected_scores[1]) / 2.0;
    for system in ["base", "rlm"] {
        let row = format!("{family:<10} {:<6} {system:<5} {:>7} {mean:>6.2}", "8k", "1/2");
        assert!(stdout.contains(&row), "no row {row:?} in:\n{stdout}");
    }
    assert!(stdout.lines().next().unwrap().starts_with("family     size   sys     right  score"), "{stdout}");
    assert!(stderr.contains(&format!("{family}: 2 tasks x 2 systems")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sniah_alias_runs_the_sniah_family() {
    bench_end_to_end("sniah", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_family_multikey() {
    bench_end_to_end("multikey", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_family_multivalue() {
    bench_end_to_end("multivalue", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_family_aggregate() {
    bench_end_to_end("aggregate", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_family_pairs() {
    bench_end_to_end("pairs", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_family_multihop() {
    bench_end_to_end("multihop", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_rejects_unknown_families_and_tasks_and_reruns_one_task() {
    let output = rlm(None).args(["bench", "--family", "oolong", "--sizes", "8k"]).output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown task family \"oolong\""));

    let output =
        rlm(None).args(["bench", "--family", "pairs", "--sizes", "8k", "--task", "8k-9"]).output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no task \"pairs-8k-9\""));

    // `--task 8k-2` with one family is that family's second task, the same as in the full set.
    let dir = tempfile::tempdir().unwrap();
    let args = ["bench", "--family", "aggregate,multihop", "--sizes", "8k", "--tasks", "3", "--seed", "1"];
    let output = rlm(None).args(args).arg("--write-tasks").arg(dir.path().join("all")).output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = rlm(None)
        .args(["bench", "--family", "multihop", "--sizes", "8k", "--tasks", "3", "--seed", "1", "--task", "8k-2"])
        .arg("--write-tasks")
        .arg(dir.path().join("one"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let all = std::fs::read_to_string(dir.path().join("all/tasks.jsonl")).unwrap();
    let one = std::fs::read_to_string(dir.path().join("one/tasks.jsonl")).unwrap();
    assert_eq!(all.lines().count(), 6);
    assert_eq!(one.lines().count(), 1);
    assert!(all.lines().any(|line| line == one.trim_end()), "{one}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("all/multihop-8k-2.txt")).unwrap(),
        std::fs::read_to_string(dir.path().join("one/multihop-8k-2.txt")).unwrap()
    );
}
