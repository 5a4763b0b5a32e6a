#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
use std::sync::Arc;
use std::time::Duration;
use async_trait::async_trait;
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_protocol::*;
struct H;
#[async_trait]
impl SubCallHost for H { async fn sub_calls(&self, c: Vec<SubCall>) -> Vec<SubCallResult> { c.into_iter().map(|_| Ok(String::new())).collect() } }
#[tokio::test(flavor = "multi_thread")]
async fn scratch() {
    let ex = WasmExecutor::new(WasmConfig::default()).unwrap();
    let code = std::env::var("SCRATCH").unwrap();
    let mut spec = SessionSpec::new(Context::Text(String::new()));
    spec.cell_timeout = Duration::from_secs(60);
    let mut s = ex.start_session(spec, Arc::new(H)).await.unwrap();
    for cell in code.split("\n#%%\n") {
        let o = s.run_cell(cell).await.unwrap();
        eprintln!("OUT {:?}\nERR {:?}\nE {:?} {:?}", o.stdout, o.stderr, o.error.map(|e| (e.kind, e.message)), o.duration);
    }
}
