//! The free-memory check made before loading, so a machine that is too small gets a sentence instead of an OOM kill.

/// Memory the kernel says can be given to a new process without swapping, in bytes; `None` where unknown.
pub(crate) fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes of an f16 KV cache of `n_ctx` cells.
pub(crate) fn kv_cache_bytes(n_ctx: u32, n_layer: u32, n_head: u32, n_head_kv: u32, n_embd: u32) -> u64 {
    let head_dim = u64::from(n_embd) / u64::from(n_head.max(1));
    // K and V, two bytes per f16 element.
    u64::from(n_ctx) * u64::from(n_layer) * 2 * u64::from(n_head_kv) * head_dim * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available() {
        let text = "MemTotal:       24000000 kB\nMemFree:         5000000 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(22_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn kv_cache_of_qwen_1_5b_at_32k_is_under_a_gib() {
        // 28 layers, 12 heads, 2 KV heads, 1536 wide: 28 KiB per token.
        let bytes = kv_cache_bytes(32768, 28, 12, 2, 1536);
        assert_eq!(bytes, 32768 * 28672);
    }
}
