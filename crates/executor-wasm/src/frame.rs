//! The channel's framing, parsed on the host with the guest's claims checked before anything is buffered.
//!
//! A frame is `<u32 LE json_len><u32 LE payload_len>`, then a JSON object, then raw payload bytes. The guest is not
//! trusted: a header announcing more than the caps allow is refused as soon as its 8 bytes arrive, so a guest cannot
//! make the host buffer more than one frame of at most `MAX_HEADER_BYTES + max_payload` bytes.

/// Frame header: `<u32 LE json_len><u32 LE payload_len>`.
pub(crate) const HEADER_LEN: usize = 8;

/// Largest JSON header the host accepts from the guest (big data travels in payloads).
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// Why the host refused what the guest sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame header of {0} bytes (the limit is {MAX_HEADER_BYTES})")]
    HeaderTooLarge(usize),
    #[error("a frame payload of {got} bytes (the limit is {limit})")]
    PayloadTooLarge { got: usize, limit: usize },
    #[error("a frame header that is not a JSON object: {0}")]
    BadHeader(String),
}

/// One complete frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: serde_json::Map<String, serde_json::Value>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's `op`, or "" when it has none.
    pub fn op(&self) -> &str {
        self.header.get("op").and_then(|op| op.as_str()).unwrap_or_default()
    }
}

/// Checks the lengths a frame announces, as soon as its 8-byte prefix is there. `Ok(None)`: fewer than 8 bytes.
pub fn announced_len(buf: &[u8], max_payload: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let json_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let payload_len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
    if json_len > MAX_HEADER_BYTES {
        return Err(FrameError::HeaderTooLarge(json_len));
    }
    if payload_len > max_payload {
        return Err(FrameError::PayloadTooLarge { got: payload_len, limit: max_payload });
    }
    Ok(Some(HEADER_LEN + json_len + payload_len))
}

/// Splits one complete frame off the front of `buf`, if there is one.
pub fn take_frame(buf: &mut Vec<u8>, max_payload: usize) -> Result<Option<Frame>, FrameError> {
    let Some(end) = announced_len(buf, max_payload)? else { return Ok(None) };
    if buf.len() < end {
        return Ok(None);
    }
    let json_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let header = match serde_json::from_slice::<serde_json::Value>(&buf[HEADER_LEN..HEADER_LEN + json_len]) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(other) => return Err(FrameError::BadHeader(format!("a JSON {}", json_kind(&other)))),
        Err(err) => return Err(FrameError::BadHeader(err.to_string())),
    };
    let payload = buf[HEADER_LEN + json_len..end].to_vec();
    buf.drain(..end);
    Ok(Some(Frame { header, payload }))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Appends a frame to `out` (host -> guest).
pub(crate) fn push_frame(out: &mut Vec<u8>, header: &serde_json::Value, payload: &[u8]) {
    let header = header.to_string();
    out.reserve(HEADER_LEN + header.len() + payload.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
}

/// Splits `payload` into UTF-8 strings of the given byte lengths, which must add up to the whole payload.
pub(crate) fn split_utf8(payload: &[u8], lens: &[usize]) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut start = 0usize;
    for &len in lens {
        let end = start.checked_add(len).filter(|&end| end <= payload.len())?;
        out.push(String::from_utf8_lossy(&payload[start..end]).into_owned());
        start = end;
    }
    (start == payload.len()).then_some(out)
}

/// How many characters `bytes` holds as UTF-8 (continuation bytes do not start one; invalid bytes count as one each,
/// as lossy decoding turns each into one replacement character).
pub(crate) fn utf8_chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| (b & 0xC0) != 0x80).count()
}

/// The longest prefix of `bytes` with at most `chars` characters, cut before a character start: its byte length.
pub(crate) fn prefix_with_chars(bytes: &[u8], chars: usize) -> usize {
    let mut seen = 0usize;
    for (index, &b) in bytes.iter().enumerate() {
        if (b & 0xC0) != 0x80 {
            if seen == chars {
                return index;
            }
            seen += 1;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(header: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(header);
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn frames_split_only_when_complete() -> Result<(), FrameError> {
        let mut buf = raw(br#"{"op":"x"}"#, b"abc");
        let tail = buf.split_off(buf.len() - 1);
        assert!(take_frame(&mut buf, 16)?.is_none());
        buf.extend_from_slice(&tail);
        buf.extend_from_slice(b"rest");
        let frame = take_frame(&mut buf, 16)?.ok_or(FrameError::BadHeader("none".into()))?;
        assert_eq!(frame.op(), "x");
        assert_eq!(frame.payload, b"abc");
        assert_eq!(buf, b"rest");
        Ok(())
    }

    #[test]
    fn oversized_announcements_are_refused_before_the_bytes_arrive() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(take_frame(&mut buf, 16), Err(FrameError::HeaderTooLarge(u32::MAX as usize)));
        let mut buf = Vec::new();
        buf.extend_from_slice(&2u32.to_le_bytes());
        buf.extend_from_slice(&17u32.to_le_bytes());
        assert_eq!(take_frame(&mut buf, 16), Err(FrameError::PayloadTooLarge { got: 17, limit: 16 }));
    }

    #[test]
    fn headers_must_be_json_objects() {
        let mut buf = raw(b"[1]", b"");
        assert!(matches!(take_frame(&mut buf, 16), Err(FrameError::BadHeader(_))));
        let mut buf = raw(b"{nope", b"");
        assert!(matches!(take_frame(&mut buf, 16), Err(FrameError::BadHeader(_))));
    }

    #[test]
    fn payloads_split_by_lengths_that_cover_them() {
        assert_eq!(split_utf8("héllo!".as_bytes(), &[6, 1]), Some(vec!["héllo".to_owned(), "!".to_owned()]));
        assert_eq!(split_utf8(b"ab", &[3]), None);
        assert_eq!(split_utf8(b"abc", &[1]), None);
    }

    /// A cheap stand-in for the fuzz target (`crates/executor-wasm/fuzz`, run with cargo-fuzz) that runs in every
    /// test run: pseudo-random guest output in pseudo-random write sizes never panics and never buffers past a frame.
    #[test]
    fn arbitrary_guest_output_is_parsed_or_refused() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let len = (next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 {
                // Plausible prefixes too, so whole frames get through.
                let json_len = (next() % 12) as u32;
                let payload_len = (next() % 40) as u32;
                let mut prefix = json_len.to_le_bytes().to_vec();
                prefix.extend_from_slice(&payload_len.to_le_bytes());
                prefix.extend_from_slice(&b"{\"op\":\"x\"} "[..json_len.min(12) as usize]);
                prefix.append(&mut bytes);
                bytes = prefix;
            }
            let step = (next() % 17 + 1) as usize;
            let mut outbox = Vec::new();
            'feed: for chunk in bytes.chunks(step) {
                outbox.extend_from_slice(chunk);
                loop {
                    match take_frame(&mut outbox, 32) {
                        Ok(Some(frame)) => assert!(frame.payload.len() <= 32),
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
                assert!(outbox.len() <= HEADER_LEN + MAX_HEADER_BYTES + 32 + step);
            }
        }
    }

    #[test]
    fn characters_are_counted_and_cut_at_boundaries() {
        let text = "aé€😀b".as_bytes();
        assert_eq!(utf8_chars(text), 5);
        assert_eq!(prefix_with_chars(text, 2), 3);
        assert_eq!(prefix_with_chars(text, 4), 10);
        assert_eq!(prefix_with_chars(text, 9), text.len());
        assert_eq!(prefix_with_chars(text, 0), 0);
    }
}
