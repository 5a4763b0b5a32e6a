//! The viewer end to end in a real headless Chromium, driven over the WebDriver protocol (chromedriver): a real
//! multi-level trace recorded by the engine against a scripted model server, a live trace growing on screen, and a
//! large generated trace. Needs Debian's `chromium` and `chromium-driver` (`scripts/setup-browser.sh`); without
//! them the tests fail with instructions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rlm::{OpenAiConfig, Rlm, TraceTarget};
use rlm_protocol::{
    CellError, CellRecord, ChatMessage, ContextInfo, EventBody, FinalRecord, FinishedBy, LimitKind, ModelCallPurpose,
    ModelCallRecord, RunMetadata, SubCallKind, SubCallRecord, TraceEvent, Usage, UsageReport,
};
use rlm_test_support::{Reply, ScriptedServer};
use rlm_viewer::{FileSource, RunSource};
use serde_json::{Value, json};
use uuid::Uuid;

/// One browser at a time: the machine has two cores and the large-trace timing should not measure contention.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ------------------------------------------------------------------------------------------------ WebDriver client

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "${env} names {}, which does not exist; see scripts/setup-browser.sh", path.display());
        return path;
    }
    for name in names {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{} not found (looked for {names:?} on PATH, or set ${env}). The viewer's browser tests need Debian's \
         `chromium` and `chromium-driver` packages: run scripts/setup-browser.sh",
        names[0]
    );
}

/// chromedriver on a free loopback port with one headless Chromium session; killed when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Also after a failed assertion: close the session (chromedriver then ends Chromium; killing chromedriver alone
    /// would orphan it), then stop chromedriver. Plain blocking HTTP: no runtime is needed in a destructor.
    fn drop(&mut self) {
        if !self.session.is_empty()
            && let Some(addr) = self.base.strip_prefix("http://")
            && let Ok(mut stream) = std::net::TcpStream::connect(addr)
        {
            use std::io::Read;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Browser {
        let chromedriver = find_program("CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_program("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // reqwest is built without a default TLS provider in this workspace; plain HTTP still needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", chromedriver.display()));
        // From here on, the guard stops chromedriver (and Chromium) whatever happens.
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser.http.get(format!("{}/status", browser.base)).send().await;
            if let Ok(response) = ready
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1440,1000".to_owned(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = browser.call("POST", "/session", caps).await;
        browser.session = created["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let response = request.send().await.unwrap_or_else(|err| panic!("WebDriver {method} {path}: {err}"));
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {value}");
        value["value"].clone()
    }

    async fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body).await
    }

    async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url })).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.session_call("POST", "/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// Polls `script` (a JS expression) until it is truthy; returns its value.
    async fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.js(&format!("return ({script});")).await;
            if !(value.is_null() || value == false || value == 0 || value == "") {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.js("return document.body.innerText.slice(0, 2000);").await;
                panic!("timed out waiting for {what} ({script}); page text:\n{}", page.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self.session_call("POST", "/element", json!({"using": "css selector", "value": css})).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.session_call("POST", &format!("/element/{element}/click"), json!({})).await;
    }

    async fn type_keys(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.session_call("POST", &format!("/element/{element}/value"), json!({ "text": text })).await;
    }

    async fn screenshot(&self, path: &Path) {
        let data = self.session_call("GET", "/screenshot", Value::Null).await;
        let png = base64_decode(data.as_str().unwrap());
        assert_eq!(&png[1..4], b"PNG");
        std::fs::write(path, png).unwrap();
    }

    async fn quit(mut self) {
        self.session_call("DELETE", "", Value::Null).await;
        self.session.clear();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

// ------------------------------------------------------------------------------------------------ the viewer

/// Serves the viewer over `inputs` on a free loopback port; returns its URL.
async fn start_viewer(inputs: Vec<PathBuf>) -> (String, Arc<FileSource>) {
    let source = FileSource::open(inputs, Duration::from_millis(100)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(rlm_viewer::serve(listener, source.clone() as Arc<dyn RunSource>, std::future::pending()));
    (url, source)
}

fn screenshot_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn repl(code: &str) -> String {
    format!("```repl\n{code}\n```")
}

/// Records a real run: the root batches three `llm_query`s, then starts a child RLM (and has a failing cell); the
/// child batches two calls and starts a grandchild at depth 2, which makes one plain call.
async fn record_trace(path: &Path) -> rlm::Completion {
    let server = ScriptedServer::builder()
        .script(
            "root",
            [
                Reply::text(format!(
                    "Let me fan out first.\n{}",
                    repl("parts = llm_query_batched(['alpha', 'beta', 'gamma'])\nprint(parts)")
                )),
                Reply::text(format!(
                    "Now a **child RLM**:\n{}\nand a mistake:\n{}",
                    repl("r = rlm_query('outer task')\nprint(r)"),
                    repl("1/0")
                )),
                Reply::text("The child answered.\nFINAL_VAR(r)"),
            ],
        )
        .script(
            "child",
            [Reply::text(format!(
                "{}\nFINAL_VAR(r)",
                repl("xs = llm_query_batched([context + '/1', context + '/2'])\nr = rlm_query('inner ' + xs[0])\nprint(r)")
            ))],
        )
        .script("grandchild", [Reply::text(format!("{}\nFINAL_VAR(g)", repl("g = llm_query('leaf ' + context)")))])
        .rule(|request| {
            (request.model == "sub").then(|| {
                let prompt = request.last_user_message().unwrap_or_default().to_owned();
                Reply::text(format!("plain:{prompt}")).with_delay(Duration::from_millis(60))
            })
        })
        .start()
        .await
        .unwrap();
    let openai = OpenAiConfig { initial_backoff: Duration::from_millis(20), ..OpenAiConfig::new(server.base_url()) };
    let rlm = Rlm::builder()
        .openai_config(openai)
        .model("root")
        .sub_model("sub")
        .depth_models(vec!["root".into(), "child".into(), "grandchild".into()])
        .max_depth(2)
        .trace(TraceTarget::File(path.to_owned()))
        .build()
        .unwrap();
    rlm.completion("top", "Which tasks nest?").await.unwrap()
}

/// The same events with fresh ids (so they form another run) and another query.
fn relabel(lines: &[String], query: &str) -> Vec<String> {
    let mut ids: HashMap<String, String> = HashMap::new();
    lines
        .iter()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).unwrap();
            for key in ["event_id", "run_id", "parent_run_id", "parent_event_id", "child_run_id", "batch_id"] {
                if let Some(Value::String(id)) = value.get(key) {
                    let new = ids.entry(id.clone()).or_insert_with(|| Uuid::new_v4().to_string()).clone();
                    value[key] = Value::String(new);
                }
            }
            if value["type"] == "metadata" && value["depth"] == 0 {
                value["query"] = Value::String(query.to_owned());
            }
            serde_json::to_string(&value).unwrap()
        })
        .collect()
}

fn count(browser_value: &Value) -> u64 {
    browser_value.as_u64().unwrap_or_else(|| panic!("not a number: {browser_value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_multi_level_run_as_a_tree_live_updates_and_a_screenshot() {
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    std::fs::create_dir(&traces).unwrap();
    let recorded = traces.join("recorded.jsonl");
    let done = record_trace(&recorded).await;
    assert_eq!(done.answer, "plain:leaf inner plain:outer task/1");
    assert_eq!((done.iterations, done.sub_calls), (3, 8));

    let (url, _source) = start_viewer(vec![traces.clone()]).await;
    let browser = Browser::start().await;

    // The run list.
    browser.goto(&url).await;
    browser.wait_for("the run list", "document.querySelectorAll('tr.run').length === 1", Duration::from_secs(20)).await;
    let list = browser.js("return document.querySelector('tr.run').innerText;").await;
    let list = list.as_str().unwrap();
    assert!(list.contains("Which tasks nest?") && list.contains("final_var"), "{list}");
    let run_id = done.run_id.to_string();

    // The run as a tree: iterations, cells, batches, sub-calls and two nested child RLMs.
    browser.click("tr.run td.q a").await;
    browser.wait_for("the tree", "document.querySelectorAll('#rows .row').length > 10", Duration::from_secs(20)).await;
    let head = browser.js("return Object.assign({}, document.querySelector('#runhead').dataset);").await;
    assert_eq!(head["iterations"], "3", "{head}");
    assert_eq!(head["subCalls"], "8", "{head}");
    assert_eq!(head["childRuns"], "2", "{head}");
    let kinds = browser
        .js("const c = {}; for (const r of document.querySelectorAll('#rows .row')) c[r.dataset.kind] = (c[r.dataset.kind] || 0) + 1; return c;")
        .await;
    assert_eq!(kinds["run"], 3, "{kinds}");
    assert_eq!(kinds["iteration"], 5, "{kinds}"); // 3 of the root, 1 of the child, 1 of the grandchild
    assert_eq!(kinds["sub_call"], 8, "{kinds}");
    assert_eq!(kinds["batch"], 2, "{kinds}");
    assert_eq!(kinds["cell"], 5, "{kinds}");
    assert_eq!(kinds["final"], 3, "{kinds}");
    // The grandchild nests inside the child, which nests inside the root.
    let levels = browser
        .js("return [...document.querySelectorAll('#rows .row[data-kind=run]')].map(r => Number(r.dataset.level));")
        .await;
    let levels: Vec<u64> = levels.as_array().unwrap().iter().map(count).collect();
    assert!(levels[0] < levels[1] && levels[1] < levels[2], "{levels:?}");
    // The failing cell and the final answer stand out.
    assert_eq!(
        count(&browser.js("return document.querySelectorAll('#rows .row.bad[data-kind=cell]').length;").await),
        1
    );
    assert_eq!(
        count(&browser.js("return document.querySelectorAll('#rows .row.good[data-kind=final]').length;").await),
        3
    );

    // Open a cell: its code and output.
    browser.click("#rows .row[data-kind=cell] .lbl").await;
    let code = browser
        .wait_for("the cell's code", "document.querySelector('#detail .cell-code')?.innerText", Duration::from_secs(10))
        .await;
    assert!(code.as_str().unwrap().contains("llm_query_batched(['alpha', 'beta', 'gamma'])"), "{code}");
    let output = browser.js("return document.querySelector('#detail .cell-stdout').innerText;").await;
    assert!(output.as_str().unwrap().contains("['plain:alpha', 'plain:beta', 'plain:gamma']"), "{output}");
    let link = browser.js("return location.hash;").await;
    assert!(link.as_str().unwrap().starts_with(&format!("#/run/{run_id}/node/")), "{link}");

    // Keyboard: j/k move between iterations; the iteration shows its response (markdown) and cells.
    browser.type_keys("#rows", "j").await;
    browser.wait_for("iteration 2", "document.querySelector('#rows .row.sel')?.dataset.kind === 'iteration' && document.querySelector('#detail .resp strong')", Duration::from_secs(10)).await;
    let selected = browser.js("return document.querySelector('#rows .row.sel .lbl').innerText;").await;
    assert!(selected.as_str().unwrap().starts_with("Iteration 2"), "{selected}");
    browser
        .wait_for(
            "the error in the iteration",
            "document.querySelector('#detail .cellbox.bad')?.innerText.includes('ZeroDivisionError')",
            Duration::from_secs(10),
        )
        .await;
    browser.type_keys("#rows", "k").await;
    browser
        .wait_for(
            "iteration 1",
            "document.querySelector('#rows .row.sel .lbl')?.innerText.startsWith('Iteration 1')",
            Duration::from_secs(10),
        )
        .await;
    browser.screenshot(&screenshot_path("recorded-run.png")).await;
    if std::env::var_os("RLM_VIEWER_DOCS_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/viewer.png");
        std::fs::copy(screenshot_path("recorded-run.png"), docs).unwrap();
    }

    // A deep link to a node of the grandchild opens the run with that node selected.
    let lines: Vec<String> = std::fs::read_to_string(&recorded).unwrap().lines().map(str::to_owned).collect();
    let leaf = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["type"] == "sub_call" && v["depth"] == 2)
        .unwrap();
    let leaf_id = leaf["event_id"].as_str().unwrap().to_owned();
    browser.goto(&format!("{url}#/")).await;
    browser.wait_for("the run list again", "document.querySelector('tr.run')", Duration::from_secs(10)).await;
    browser.goto(&format!("{url}#/run/{run_id}/node/{leaf_id}")).await;
    browser
        .wait_for(
            "the linked node",
            &format!("document.querySelector('#rows .row.sel')?.dataset.key === '{leaf_id}'"),
            Duration::from_secs(20),
        )
        .await;
    let prompt = browser
        .wait_for("its prompt", "document.querySelector('#detail .sub-prompt')?.innerText", Duration::from_secs(10))
        .await;
    assert_eq!(prompt.as_str().unwrap(), "leaf inner plain:outer task/1");

    // Live: a run that is still being written grows on the page without a reload.
    let live_lines = relabel(&lines, "a live run");
    let live_path = traces.join("live.jsonl");
    let mut live = std::fs::File::create(&live_path).unwrap();
    let first_cell =
        live_lines.iter().position(|l| l.contains("\"type\":\"cell\"") && l.contains("\"depth\":0")).unwrap();
    for line in &live_lines[..=first_cell] {
        writeln!(live, "{line}").unwrap();
    }
    live.flush().unwrap();
    browser.goto(&format!("{url}#/")).await;
    browser
        .wait_for(
            "the live run in the list",
            "document.querySelectorAll('tr.run').length === 2",
            Duration::from_secs(20),
        )
        .await;
    browser.type_keys("#search", "live").await;
    browser.wait_for("the search", "document.querySelectorAll('tr.run').length === 1", Duration::from_secs(5)).await;
    let status = browser.js("return document.querySelector('tr.run .badge').innerText;").await;
    assert_eq!(status, "running");
    browser.click("tr.run td.q a").await;
    browser
        .wait_for(
            "the live tree",
            "document.querySelector('#runhead')?.dataset.iterations === '1'",
            Duration::from_secs(20),
        )
        .await;
    browser.js("window.__sameDocument = 'yes'; return 1;").await;
    let before = count(&browser.js("return document.querySelectorAll('#rows .row').length;").await);
    let started = Instant::now();
    let rest = &live_lines[first_cell + 1..];
    let half = rest.len() / 2;
    for line in &rest[..half] {
        writeln!(live, "{line}").unwrap();
    }
    live.flush().unwrap();
    browser
        .wait_for(
            "the live tree to grow",
            &format!("document.querySelectorAll('#rows .row').length > {before}"),
            Duration::from_secs(20),
        )
        .await;
    let first_growth = started.elapsed();
    for line in &rest[half..] {
        writeln!(live, "{line}").unwrap();
    }
    live.flush().unwrap();
    browser.wait_for("the live run to finish", "document.querySelector('#runhead')?.dataset.status === 'ok' && document.querySelector('#runhead').dataset.iterations === '3'", Duration::from_secs(20)).await;
    assert_eq!(browser.js("return window.__sameDocument;").await, "yes", "the page was reloaded");
    let head = browser.js("return Object.assign({}, document.querySelector('#runhead').dataset);").await;
    assert_eq!((head["subCalls"].as_str(), head["childRuns"].as_str()), (Some("8"), Some("2")), "{head}");
    println!("live trace: appended lines appeared on the page after {} ms", first_growth.as_millis());
    browser.screenshot(&screenshot_path("live-run.png")).await;
    browser.quit().await;
}

// ------------------------------------------------------------------------------------------------ a large trace

fn at(start: DateTime<Utc>, ms: f64) -> DateTime<Utc> {
    start + chrono::Duration::microseconds((ms * 1000.0) as i64)
}

/// Writes one run of `iterations` iterations, each a model call, a batch of `batch` sub-calls with ~`prompt_bytes`
/// prompts and a cell; some cells fail or are truncated, the run ends on the iteration limit.
fn write_large_trace(path: &Path, iterations: u32, batch: u32, prompt_bytes: usize) -> (usize, u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let run = Uuid::new_v4();
    let start = Utc::now() - chrono::Duration::hours(1);
    let mut events = 0;
    let mut write = |iteration: Option<u32>, ts: DateTime<Utc>, body: EventBody| {
        let event = TraceEvent {
            event_id: Uuid::new_v4(),
            run_id: run,
            parent_run_id: None,
            parent_event_id: None,
            depth: 0,
            iteration,
            ts,
            body,
        };
        serde_json::to_writer(&mut out, &event).unwrap();
        out.write_all(b"\n").unwrap();
        events += 1;
    };
    write(
        None,
        start,
        EventBody::Metadata(RunMetadata {
            rlm_version: "test".into(),
            query: "A large generated trace".into(),
            root_model: "root".into(),
            sub_model: "sub".into(),
            config: json!({"max_iterations": iterations}),
            executor: "local".into(),
            context: ContextInfo {
                python_type: "str".into(),
                total_chars: 1 << 30,
                chunk_lengths: vec![1 << 30],
                chunk_count: 1,
            },
            route: None,
        }),
    );
    let filler: String = "lorem ipsum dolor sit amet, consectetur adipiscing elit ".repeat(prompt_bytes / 56 + 1);
    let usage = Usage { prompt_tokens: 2000, completion_tokens: 100, cached_tokens: 0, calls: 1, ..Usage::default() };
    let mut t = 0.0;
    for i in 1..=iterations {
        write(
            Some(i),
            at(start, t),
            EventBody::ModelCall(ModelCallRecord {
                purpose: ModelCallPurpose::Iteration,
                model: "root".into(),
                new_messages: vec![ChatMessage::user(format!("Iteration {i}: output of the previous cell"))],
                history_len: 2 * i as usize,
                response: Some(format!("Step {i}.\n```repl\nreplies = llm_query_batched(chunks[{i}])\n```")),
                usage,
                latency_ms: 800.0,
                error: None,
            }),
        );
        t += 800.0;
        let batch_id = Uuid::new_v4();
        for b in 0..batch {
            write(
                Some(i),
                at(start, t + f64::from(b % 16) * 3.0),
                EventBody::SubCall(SubCallRecord {
                    kind: SubCallKind::Llm,
                    model: "sub".into(),
                    prompt: format!("chunk {i}/{b}: {}", &filler[..prompt_bytes]).into(),
                    response: if b % 97 == 5 { None } else { Some(format!("summary {i}/{b}")) },
                    error: (b % 97 == 5).then(|| "HTTP 500 from the provider".into()),
                    usage,
                    latency_ms: 300.0 + f64::from(b % 7) * 40.0,
                    batch_id: Some(batch_id),
                    batch_index: b,
                    batch_size: batch,
                    child_run_id: None,
                }),
            );
        }
        write(
            Some(i),
            at(start, t),
            EventBody::Cell(CellRecord {
                index: i,
                code: format!("replies = llm_query_batched(chunks[{i}])\nprint(len(replies))"),
                stdout: format!("{batch}\n"),
                stderr: String::new(),
                error: (i % 50 == 0).then(|| CellError {
                    kind: "KeyError".into(),
                    message: "'total'".into(),
                    traceback: "Traceback ...".into(),
                }),
                duration_ms: 1400.0,
                truncated_chars: if i % 40 == 0 { 12_345 } else { 0 },
            }),
        );
        t += 1400.0;
    }
    let mut report = UsageReport::default();
    report.add("root", usage);
    write(
        None,
        at(start, t),
        EventBody::Final(FinalRecord {
            answer: Some("best effort".into()),
            finished_by: FinishedBy::Limit,
            limit: Some(LimitKind::MaxIterations),
            iterations,
            sub_calls: u64::from(iterations * batch),
            usage: report,
            duration_ms: t,
            error: None,
        }),
    );
    out.flush().unwrap();
    (events, std::fs::metadata(path).unwrap().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_trace_opens_without_freezing_the_page() {
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.jsonl");
    let t = Instant::now();
    let (events, bytes) = write_large_trace(&path, 200, 50, 9_600);
    println!(
        "large trace: {events} events, {:.1} MB, written in {:.2} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    assert!(events >= 10_000 && bytes >= 100_000_000, "{events} events, {bytes} bytes");

    let t = Instant::now();
    let (url, source) = start_viewer(vec![path.clone()]).await;
    let indexed = t.elapsed();
    assert_eq!(source.event_count(), events);
    let run_id = source.runs().await.unwrap()[0].run_id;
    println!("large trace: indexed by the server in {:.2} s", indexed.as_secs_f64());

    let browser = Browser::start().await;
    browser.goto(&format!("{url}#/")).await;
    browser.wait_for("the run list", "document.querySelector('tr.run')", Duration::from_secs(30)).await;
    let t = Instant::now();
    browser.goto(&format!("{url}#/run/{run_id}")).await;
    browser
        .wait_for(
            "the first rows",
            "window.__rlmFirstRenderMs != null && document.querySelectorAll('#rows .row').length > 0",
            Duration::from_secs(60),
        )
        .await;
    let first_render = t.elapsed();
    let page_first_render = browser.js("return window.__rlmFirstRenderMs;").await.as_f64().unwrap();
    browser
        .wait_for(
            "the whole outline",
            &format!("document.querySelector('#runhead')?.dataset.events === '{events}'"),
            Duration::from_secs(60),
        )
        .await;
    let all_loaded = t.elapsed();
    println!(
        "large trace: first rows on screen {} ms after navigation (page's own measure {page_first_render:.0} ms), whole \
         outline of {events} events in {} ms",
        first_render.as_millis(),
        all_loaded.as_millis()
    );
    assert!(first_render < Duration::from_secs(15), "first render took {first_render:?}");

    // Only what is visible is in the DOM, even with everything expanded, and the page stays responsive.
    browser.click("#expand-all").await;
    let rows_in_dom = count(&browser.js("return document.querySelectorAll('#rows .row').length;").await);
    assert!(rows_in_dom < 200, "{rows_in_dom} rows rendered");
    let t = Instant::now();
    browser.js("const r = document.querySelector('#rows'); r.scrollTop = r.scrollHeight; return 1;").await;
    browser
        .wait_for(
            "the last rows",
            "[...document.querySelectorAll('#rows .row')].some(r => r.dataset.kind === 'final')",
            Duration::from_secs(10),
        )
        .await;
    let scrolled = t.elapsed();
    println!(
        "large trace: expanded ({rows_in_dom} rows in the DOM) and scrolled to the end in {} ms",
        scrolled.as_millis()
    );
    assert!(scrolled < Duration::from_secs(5), "{scrolled:?}");
    // The limit hit stands out; a sub-call opens with its (large) prompt, fetched on demand.
    assert!(browser.js("return document.querySelector('#rows .row.bad[data-kind=final]') !== null;").await == true);
    browser.click("#rows .row[data-kind=final] .lbl").await;
    browser
        .wait_for(
            "the final answer",
            "document.querySelector('#detail .final-answer')?.innerText === 'best effort'",
            Duration::from_secs(10),
        )
        .await;
    browser.screenshot(&screenshot_path("large-trace.png")).await;
    browser.quit().await;
}

/// The router works under a prefix, as `rlm serve` would mount it at `/ui`: the page's URLs start there.
#[tokio::test]
async fn the_page_and_api_work_when_nested_under_a_prefix() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = Arc::new(rlm_viewer::MemorySource::new("service"));
    let app = axum::Router::new().nest("/ui", rlm_viewer::router(source.clone() as Arc<dyn RunSource>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let page = http.get(format!("{base}/ui")).send().await.unwrap();
    assert!(page.status().is_success(), "{} {:?}", page.status(), page.headers());
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<meta name="rlm-base" content="/ui/">"#), "{html}");
    assert!(html.contains(r#"<script src="/ui/app.js""#), "{html}");
    for asset in ["app.js", "style.css"] {
        assert!(http.get(format!("{base}/ui/{asset}")).send().await.unwrap().status().is_success(), "{asset}");
    }
    let runs: Value = http.get(format!("{base}/ui/api/runs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(runs["runs"], json!([]));
    let missing = http.get(format!("{base}/ui/api/runs/{}/events", Uuid::new_v4())).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

// ------------------------------------------------------------------------------------------------ a compaction

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_shows_in_its_iteration_with_its_summary() {
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compacted.jsonl");
    // A 4,096-token model that explores for six turns, 1,500 characters of output each: the engine compacts.
    let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = ScriptedServer::builder()
        .rule(move |request| {
            if request.system_message().is_some_and(|s| s.contains("condense the working notes")) {
                return Some(Reply::text("Chunks 0 to 3 were printed; nothing found yet."));
            }
            let n = turn.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(Reply::text(if n < 6 {
                repl(&format!("print('{n} ' + 'data ' * 300)"))
            } else {
                "FINAL(done)".to_owned()
            }))
        })
        .start()
        .await
        .unwrap();
    let rlm = Rlm::builder()
        .openai_config(OpenAiConfig::new(server.base_url()))
        .model("root")
        .context_window(4096)
        .route(rlm::RouteMode::Rlm)
        .trace(TraceTarget::File(path.clone()))
        .build()
        .unwrap();
    rlm.completion("ctx", "Read every chunk.").await.unwrap();

    let (url, _source) = start_viewer(vec![path]).await;
    let browser = Browser::start().await;
    browser.goto(&url).await;
    browser.wait_for("the run list", "document.querySelectorAll('tr.run').length === 1", Duration::from_secs(20)).await;
    browser.click("tr.run td.q a").await;
    browser
        .wait_for(
            "a compaction row",
            "document.querySelector('#rows .row[data-kind=compaction]')",
            Duration::from_secs(20),
        )
        .await;
    let label = browser.js("return document.querySelector('#rows .row[data-kind=compaction] .lbl').innerText;").await;
    assert!(label.as_str().unwrap().contains("messages summarised"), "{label}");
    browser.click("#rows .row[data-kind=compaction] .lbl").await;
    let summary = browser
        .wait_for(
            "the summary",
            "document.querySelector('#detail .compaction-summary')?.innerText",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(summary.as_str().unwrap(), "Chunks 0 to 3 were printed; nothing found yet.");
    let detail = browser.js("return document.querySelector('#detail').innerText;").await;
    assert!(detail.as_str().unwrap().contains("history"), "{detail}");
    browser.screenshot(&screenshot_path("compaction.png")).await;
    browser.quit().await;
}
