#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]
use std::sync::Arc;
use async_trait::async_trait;
use rlm_protocol::*;
struct H;
#[async_trait]
impl SubCallHost for H { async fn sub_calls(&self, c: Vec<SubCall>) -> Vec<SubCallResult> { c.into_iter().map(|_| Ok(String::new())).collect() } }
#[tokio::test(flavor = "multi_thread")]
async fn scratch() {
    let ex = rlm_executor_local::LocalExecutor::new();
    let cells: Vec<Vec<&str>> = vec![
        vec!["import sys\nsys.exit(3)", "print('after')"],
        vec!["raise KeyboardInterrupt", "print('after')"],
        vec!["raise BaseException('x')", "1+1"],
        vec!["import sys\nsys.stdout = None", "print('hi')\n1+1"],
        vec!["import sys\nprint('hi2')\n2+2"],
        vec!["import builtins\nbuiltins.print = None", "print('hi3')\n3+3"],
        vec!["print('hi4')\n4+4"],
        vec!["import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)"],
        vec!["import gc\nprint(sum(1 for o in gc.get_objects() if isinstance(o, dict) and 'context' in o))"],
        vec!["import sys\nf=sys._getframe()\nwhile f: print(f.f_code.co_filename, f.f_code.co_name, sorted(k for k in f.f_globals if not k.startswith('__'))[:8]); f=f.f_back"],
        vec!["import sys\nprint(sorted(sys._current_frames().keys()).__len__())"],
    ];
    for c in cells {
        let mut s = ex.start_session(SessionSpec::new(Context::text("ctx")), Arc::new(H)).await.unwrap();
        for cell in c {
            let o = s.run_cell(cell).await;
            println!("{cell:?} => {o:?}");
        }
    }
}
