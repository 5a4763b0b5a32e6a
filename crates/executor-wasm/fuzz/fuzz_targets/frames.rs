//! Feeds arbitrary guest output to the host's frame parser, in arbitrary write sizes: it must never panic, never
//! hold more than one frame, and refuse any announcement past the caps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rlm_executor_wasm::frame::{MAX_HEADER_BYTES, announced_len, take_frame};

const MAX_PAYLOAD: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut outbox = Vec::new();
    for chunk in bytes.chunks(step) {
        outbox.extend_from_slice(chunk);
        loop {
            match announced_len(&outbox, MAX_PAYLOAD) {
                Ok(Some(end)) => assert!(end <= 8 + MAX_HEADER_BYTES + MAX_PAYLOAD),
                Ok(None) => break,
                Err(_) => return,
            }
            match take_frame(&mut outbox, MAX_PAYLOAD) {
                Ok(Some(frame)) => assert!(frame.payload.len() <= MAX_PAYLOAD),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
