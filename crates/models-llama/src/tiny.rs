//! A tiny GGUF model with random weights, written at test time so tests of the mechanics (loading, template,
//! caching, batching, usage) download no weights. Its answers are noise; its shapes and metadata are real: a
//! two-layer llama with a byte-level BPE vocabulary, ChatML special tokens and a ChatML chat template. Greedy
//! replies never end on their own: they run to the requested length.

use std::io::Write;
use std::path::Path;

/// The window the tiny model says it was trained with.
pub const TINY_N_CTX_TRAIN: u32 = 1024;

const N_EMBD: u64 = 64;
const N_FF: u64 = 128;
const N_HEAD: u32 = 4;
const N_HEAD_KV: u32 = 2;
const N_LAYER: u32 = 2;
const ALIGNMENT: u64 = 32;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + \
                      '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' \
                      }}{% endif %}";

enum Value {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// Writes the tiny model to `path`.
pub fn write_tiny_model(path: &Path) -> std::io::Result<()> {
    let mut tokens: Vec<String> = byte_level_alphabet();
    let mut types = vec![1_i32; tokens.len()];
    tokens.push("ab".to_owned());
    types.push(1);
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let first_special = tokens.len() as u32;
    for special in specials {
        tokens.push(special.to_owned());
        types.push(3);
    }
    let n_vocab = tokens.len() as u64;
    let head_dim = N_EMBD / u64::from(N_HEAD);
    let n_embd_kv = head_dim * u64::from(N_HEAD_KV);

    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::Str("llama".to_owned())),
        ("general.name", Value::Str("rlm-tiny".to_owned())),
        ("general.alignment", Value::U32(ALIGNMENT as u32)),
        ("llama.context_length", Value::U32(TINY_N_CTX_TRAIN)),
        ("llama.embedding_length", Value::U32(N_EMBD as u32)),
        ("llama.block_count", Value::U32(N_LAYER)),
        ("llama.feed_forward_length", Value::U32(N_FF as u32)),
        ("llama.attention.head_count", Value::U32(N_HEAD)),
        ("llama.attention.head_count_kv", Value::U32(N_HEAD_KV)),
        ("llama.rope.dimension_count", Value::U32(head_dim as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::Str("gpt2".to_owned())),
        ("tokenizer.ggml.pre", Value::Str("default".to_owned())),
        ("tokenizer.ggml.tokens", Value::Strs(tokens)),
        ("tokenizer.ggml.token_type", Value::I32s(types)),
        ("tokenizer.ggml.merges", Value::Strs(vec!["a b".to_owned()])),
        ("tokenizer.ggml.bos_token_id", Value::U32(first_special)),
        ("tokenizer.ggml.eos_token_id", Value::U32(first_special + 2)),
        ("tokenizer.ggml.padding_token_id", Value::U32(first_special)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.chat_template", Value::Str(CHATML.to_owned())),
    ];

    let mut tensors: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".to_owned(), vec![N_EMBD, n_vocab]),
        ("output_norm.weight".to_owned(), vec![N_EMBD]),
        ("output.weight".to_owned(), vec![N_EMBD, n_vocab]),
    ];
    for layer in 0..N_LAYER {
        let name = |part: &str| format!("blk.{layer}.{part}.weight");
        tensors.extend([
            (name("attn_norm"), vec![N_EMBD]),
            (name("attn_q"), vec![N_EMBD, N_EMBD]),
            (name("attn_k"), vec![N_EMBD, n_embd_kv]),
            (name("attn_v"), vec![N_EMBD, n_embd_kv]),
            (name("attn_output"), vec![N_EMBD, N_EMBD]),
            (name("ffn_norm"), vec![N_EMBD]),
            (name("ffn_gate"), vec![N_EMBD, N_FF]),
            (name("ffn_down"), vec![N_FF, N_EMBD]),
            (name("ffn_up"), vec![N_EMBD, N_FF]),
        ]);
    }

    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3_u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in &metadata {
        put_str(&mut out, key);
        put_value(&mut out, value);
    }
    let mut offset = 0_u64;
    for (name, dims) in &tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for dim in dims {
            out.extend_from_slice(&dim.to_le_bytes());
        }
        out.extend_from_slice(&0_u32.to_le_bytes()); // F32
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (dims.iter().product::<u64>() * 4).next_multiple_of(ALIGNMENT);
    }
    pad(&mut out);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for (name, dims) in &tensors {
        let count = dims.iter().product::<u64>();
        let norm = name.contains("norm");
        let scale = if name.starts_with("token_embd") { 1.0 } else { 0.3 };
        let start = out.len();
        // The special tokens' output rows are zero, so their logit is 0 while some other token's is positive:
        // greedy decoding never ends a reply early, and replies are exactly as long as asked.
        let silent_from = if name == "output.weight" { u64::from(first_special) * N_EMBD } else { count };
        for index in 0..count {
            let value = if norm {
                1.0
            } else if index >= silent_from {
                0.0
            } else {
                scale * next_unit(&mut rng)
            };
            out.extend_from_slice(&value.to_le_bytes());
        }
        let written = (out.len() - start) as u64;
        out.resize(start + written.next_multiple_of(ALIGNMENT) as usize, 0);
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(&out)?;
    file.sync_all()
}

/// GPT-2's printable stand-ins for the 256 bytes, in byte order.
fn byte_level_alphabet() -> Vec<String> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut extra = 0;
    (0..256_u32)
        .map(|b| {
            let code = if printable(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(code).map(String::from).unwrap_or_default()
        })
        .collect()
}

fn next_unit(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    ((*state >> 40) as f32 / (1_u64 << 24) as f32) * 2.0 - 1.0
}

fn pad(out: &mut Vec<u8>) {
    let len = (out.len() as u64).next_multiple_of(ALIGNMENT) as usize;
    out.resize(len, 0);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    const U32: u32 = 4;
    const I32: u32 = 5;
    const F32: u32 = 6;
    const BOOL: u32 = 7;
    const STRING: u32 = 8;
    const ARRAY: u32 = 9;
    match value {
        Value::U32(v) => {
            out.extend_from_slice(&U32.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::F32(v) => {
            out.extend_from_slice(&F32.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Bool(v) => {
            out.extend_from_slice(&BOOL.to_le_bytes());
            out.push(u8::from(*v));
        }
        Value::Str(v) => {
            out.extend_from_slice(&STRING.to_le_bytes());
            put_str(out, v);
        }
        Value::Strs(items) => {
            out.extend_from_slice(&ARRAY.to_le_bytes());
            out.extend_from_slice(&STRING.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_str(out, item);
            }
        }
        Value::I32s(items) => {
            out.extend_from_slice(&ARRAY.to_le_bytes());
            out.extend_from_slice(&I32.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                out.extend_from_slice(&item.to_le_bytes());
            }
        }
    }
}
