//! Containment of cells that tamper with state the whole interpreter shares: `sys.stdout` / `sys.stderr`, the
//! `builtins` module, signal handlers. A test binary of its own (one interpreter per process), and the tests take a
//! lock so that a cell silencing `sys.stdout` never overlaps a cell of another test.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rlm_executor_local::{LocalExecutor, LocalSession};
use rlm_protocol::{CellOutcome, Context, Error, ReplSession, SessionSpec, SubCall, SubCallHost, SubCallResult};
use tokio::sync::Mutex;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

static SERIAL: Mutex<()> = Mutex::const_new(());

struct NoModels;

#[async_trait]
impl SubCallHost for NoModels {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        calls.iter().map(|_| Err("no models".to_owned())).collect()
    }
}

async fn session() -> Result<LocalSession, Error> {
    let mut spec = SessionSpec::new(Context::text("ctx"));
    spec.cell_timeout = Duration::from_secs(30);
    LocalExecutor::new().start_local_session(spec, Arc::new(NoModels)).await
}

async fn run_ok(session: &mut LocalSession, code: &str) -> Result<CellOutcome, Error> {
    let outcome = session.run_cell(code).await?;
    assert!(outcome.error.is_none(), "cell {code:?} failed: {:?}", outcome.error);
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_output_streams_do_not_outlive_the_cell() -> TestResult {
    let _serial = SERIAL.lock().await;
    let mut hostile = session().await?;
    let mut other = session().await?;
    run_ok(&mut hostile, "import sys\nsys.stdout = None\nsys.stderr = None").await?;
    let outcome = run_ok(&mut other, "import sys\nprint('out')\nprint('err', file=sys.stderr)\n1 + 1").await?;
    assert_eq!((outcome.stdout.as_str(), outcome.stderr.as_str()), ("out\n2\n", "err\n"));
    let outcome = run_ok(&mut hostile, "print('back')\n'echo'").await?;
    assert_eq!(outcome.stdout, "back\n'echo'\n");

    // Any replacement is undone, and the routers themselves cannot be re-pointed.
    run_ok(&mut hostile, "import io\nsys.stdout = io.StringIO()\nsys.stderr = io.StringIO()").await?;
    let outcome = run_ok(&mut other, "print('still captured')").await?;
    assert_eq!(outcome.stdout, "still captured\n");
    let outcome = hostile.run_cell("sys.stdout._real = io.StringIO()").await?;
    assert_eq!(outcome.error.map(|e| e.kind).as_deref(), Some("AttributeError"));
    let outcome = run_ok(&mut session().await?, "print('fresh')").await?;
    assert_eq!(outcome.stdout, "fresh\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtins_module_is_restored_after_every_cell() -> TestResult {
    let _serial = SERIAL.lock().await;
    let mut hostile = session().await?;
    let tamper = "import builtins\n\
                  def hijack(name, *args, **kwargs):\n    raise ImportError('hijacked ' + name)\n\
                  builtins.print = None\nbuiltins.len = None\nbuiltins.__import__ = hijack\n\
                  builtins.planted = 'x'\n\
                  del builtins.sorted\n\
                  40 + 2";
    // The echo of the tampering cell itself does not depend on the builtins it broke.
    let outcome = run_ok(&mut hostile, tamper).await?;
    assert_eq!(outcome.stdout, "42\n");
    let probe = "import json\nprint(len('abc'), sorted([2, 1]), json.dumps([1]))\n\
                 hasattr(__import__('builtins'), 'planted')";
    let expected = "3 [1, 2] [1]\nFalse\n";
    assert_eq!(run_ok(&mut hostile, probe).await?.stdout, expected);
    assert_eq!(run_ok(&mut session().await?, probe).await?.stdout, expected);

    // Tampering that keeps the number of names, replacements that claim to equal what they replace, and a cell that
    // also replaces the functions a check of the builtins could use: all undone.
    let same_count = "import builtins\ndel builtins.sorted\nbuiltins.planted = 'x'";
    let liars = "import builtins, operator, itertools\n\
                 class Liar:\n    __eq__ = lambda self, other: True\n    __ne__ = lambda self, other: False\n\
                 __hash__ = lambda self: 0\n\
                 operator.is_not = lambda a, b: False\noperator.is_ = lambda a, b: True\n\
                 itertools.repeat = lambda value: iter(())\n\
                 builtins.abs = Liar()\nbuiltins.len = Liar()";
    // Through the module: a cell's own names come from its session's copy of the builtins.
    let probe = "import builtins as b\nprint(b.len('abc'), b.abs(-2), b.sorted([2, 1]))\nhasattr(b, 'planted')";
    for tamper in [same_count, liars] {
        run_ok(&mut hostile, tamper).await?;
        assert_eq!(run_ok(&mut session().await?, probe).await?.stdout, "3 2 [1, 2]\nFalse\n", "after {tamper:?}");
        assert_eq!(run_ok(&mut hostile, probe).await?.stdout, "3 2 [1, 2]\nFalse\n", "after {tamper:?}");
    }

    // A session's own builtins are its own: tampering with them stays in that session.
    run_ok(&mut hostile, "__builtins__['len'] = lambda obj: -1").await?;
    assert_eq!(run_ok(&mut hostile, "len('abc')").await?.stdout, "-1\n");
    assert_eq!(run_ok(&mut session().await?, "len('abc')").await?.stdout, "3\n");
    Ok(())
}

/// `SigIgn` and `SigCgt` of this process (Linux).
fn signal_masks() -> Option<(String, String)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| status.lines().find_map(|line| line.strip_prefix(key)).map(|v| v.trim().to_owned());
    Some((field("SigIgn:")?, field("SigCgt:")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_never_run_on_the_main_thread_of_python() -> TestResult {
    let _serial = SERIAL.lock().await;
    // Start the interpreter from a blocking-pool thread, the kind of thread cells later run on.
    tokio::task::spawn_blocking(LocalExecutor::initialize).await??;
    let before = signal_masks();
    let attempt = "import signal, threading\n\
                   try:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    result = 'installed'\n\
                   except ValueError:\n    result = 'refused'\n\
                   result, threading.current_thread() is threading.main_thread()";
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(session().await?);
    }
    for round in 0..10 {
        for s in &mut sessions {
            let outcome = run_ok(s, attempt).await?;
            assert_eq!(outcome.stdout, "('refused', False)\n", "round {round}");
        }
    }
    assert_eq!(signal_masks(), before, "the host's signal dispositions changed");
    Ok(())
}
