//! Load time, prompt and generation speed, the conversation cache at work, and generation with prompt lookup off
//! against on, on a GGUF file:
//! `cargo run --release -p rlm-models-llama --example speed -- MODEL.gguf [THREADS] [all|lookup] [ROUNDS]`
//! (`lookup` measures only lookup off against on).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a measuring tool")]

use std::time::Instant;

use rlm_models_llama::{LlamaClient, LlamaConfig};
use rlm_protocol::{ChatMessage, ModelClient, ModelRequest};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: speed MODEL.gguf [THREADS] [all|lookup] [ROUNDS]");
    let threads: Option<u32> = args.next().map(|t| t.parse().unwrap());
    let mode = args.next().unwrap_or_else(|| "all".to_owned());
    let rounds: usize = args.next().map_or(3, |r| r.parse().unwrap());
    let load = |lookup: bool| {
        let mut config = LlamaConfig::new(&path);
        config.n_ctx = Some(8192);
        config.threads = threads;
        config.lookup = lookup;
        LlamaClient::load(config).unwrap()
    };
    if mode != "lookup" {
        basics(load(true)).await;
    }
    lookup_off_and_on(load(false), load(true), rounds).await;
}

async fn basics(client: LlamaClient) {
    let info = client.info();
    println!("loaded in {:.2} s: n_ctx_train {}, threads {}", info.load_seconds, info.n_ctx_train, info.threads);

    let text = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    let mut messages = vec![ChatMessage::system("You are terse."), ChatMessage::user(format!("{text}\nSay hi."))];
    let ask = |messages: Vec<ChatMessage>| ModelRequest {
        model: "m".to_owned(),
        messages,
        max_output_tokens: Some(64),
        temperature: None,
    };
    for turn in 1..=3 {
        let decoded = client.stats().decoded_prompt_tokens();
        let generated = client.stats().generated_tokens();
        let started = Instant::now();
        let answer = client.complete(ask(messages.clone())).await.unwrap();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "turn {turn}: prompt {} tokens ({} cached, {} decoded), {} generated, {seconds:.2} s",
            answer.usage.prompt_tokens,
            answer.usage.cached_tokens,
            client.stats().decoded_prompt_tokens() - decoded,
            client.stats().generated_tokens() - generated,
        );
        messages.push(ChatMessage::assistant(answer.content));
        messages.push(ChatMessage::user(format!("Turn {turn} done. Say hi again.")));
    }

    // Prompt-only and generation-only rates from one-shot requests.
    let started = Instant::now();
    let answer = client.complete(ask(vec![ChatMessage::user(format!("{text}\nOK?"))])).await.unwrap();
    let total = started.elapsed().as_secs_f64();
    println!(
        "one-shot: {} prompt + {} generated tokens in {total:.2} s",
        answer.usage.prompt_tokens, answer.usage.completion_tokens
    );
    let started = Instant::now();
    let long = client
        .complete(ModelRequest { max_output_tokens: Some(128), ..ask(vec![ChatMessage::user("Count from 1 to 200.")]) })
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "generation: {} tokens in {seconds:.2} s = {:.1} tokens/s",
        long.usage.completion_tokens,
        long.usage.completion_tokens as f64 / seconds
    );

    // Four one-shot requests at once, against one after another.
    let one = || ask(vec![ChatMessage::user(format!("{}\nSummarise.", "Data line. ".repeat(60)))]);
    let started = Instant::now();
    for _ in 0..4 {
        client.complete(one()).await.unwrap();
    }
    let sequential = started.elapsed().as_secs_f64();
    let started = Instant::now();
    futures::future::join_all((0..4).map(|_| client.complete(one()))).await;
    let parallel = started.elapsed().as_secs_f64();
    println!("4 one-shot requests: {sequential:.2} s one after another, {parallel:.2} s together");
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "unknown".to_owned(), |text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// What an RLM's root model sees in the middle of a run: its instructions, the question, its first code block and
/// what that code printed. The printed passages hold the names and numbers the next code block works with.
fn rlm_turn() -> Vec<ChatMessage> {
    let passages = (0..12)
        .map(|i| {
            format!(
                "[{}] ...the shipment for warehouse_{i} was logged by operator_{} with code ZX-{:04}; the manifest \
                 lists {} crates of item_{} and the checksum is {:08x}...",
                1200 + i * 4375,
                (i * 7) % 5,
                (i * 379) % 10000,
                10 + i * 3,
                i % 4,
                0x9e37_79b9_u32.wrapping_mul(i as u32 + 1)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    vec![
        ChatMessage::system(
            "You answer a question about a long text stored in the Python variable `context`. You cannot see it; you \
             only see what your code prints. In each reply write one Python code block in ```repl fences. \
             search(\"words\") returns the passages of `context` containing the words; llm_query(\"prompt\") asks \
             another model. When the printed output shows the answer, reply FINAL(answer).",
        ),
        ChatMessage::user(
            "Question: for every warehouse in the shipment log, which operator logged it and with which code? \
             Print a table.",
        ),
        ChatMessage::assistant("```repl\nprint(search(\"shipment warehouse operator code\"))\n```"),
        ChatMessage::user(format!(
            "Output:\n{passages}\n\nWrite code that extracts, for each passage printed above, the warehouse, the \
             operator and the code into a list of dicts (write the values out as literals, one dict per warehouse), \
             then prints them as a table."
        )),
    ]
}

/// Generation speed with prompt lookup off and on, on the same turn with the same (greedy) sampling; the two runs of
/// each round are interleaved, alternating which goes first, so load from other work falls on both alike.
async fn lookup_off_and_on(off: LlamaClient, on: LlamaClient, rounds: usize) {
    let request = ModelRequest {
        model: "m".to_owned(),
        messages: rlm_turn(),
        max_output_tokens: Some(320),
        temperature: Some(0.0),
    };
    println!("lookup off vs on: {rounds} rounds of one RLM turn (320 tokens at most), threads {}", on.info().threads);
    // The first request of each decodes the prompt; later ones find it cached and time generation.
    let first_off = off.complete(request.clone()).await.unwrap();
    let first_on = on.complete(request.clone()).await.unwrap();
    println!(
        "prompt {} tokens; same reply with lookup on and off: {}; {} tokens",
        first_on.usage.prompt_tokens,
        if first_on.content == first_off.content { "yes" } else { "NO" },
        first_on.usage.completion_tokens
    );
    let (mut off_seconds, mut on_seconds, mut off_tokens, mut on_tokens) = (0.0, 0.0, 0, 0);
    let (drafted, accepted, decodes) =
        (on.stats().drafted_tokens(), on.stats().accepted_draft_tokens(), on.stats().decode_calls());
    for round in 0..rounds {
        let order: [(&LlamaClient, bool); 2] =
            if round % 2 == 0 { [(&off, false), (&on, true)] } else { [(&on, true), (&off, false)] };
        let mut line = format!("round {}: load {}", round + 1, load_average());
        let mut replies = Vec::new();
        for (client, lookup) in order {
            let started = Instant::now();
            let answer = client.complete(request.clone()).await.unwrap();
            let seconds = started.elapsed().as_secs_f64();
            let tokens = answer.usage.completion_tokens;
            if lookup {
                on_seconds += seconds;
                on_tokens += tokens;
            } else {
                off_seconds += seconds;
                off_tokens += tokens;
            }
            line.push_str(&format!(
                "; lookup {}: {tokens} tokens in {seconds:.2} s = {:.2} tokens/s",
                if lookup { "on" } else { "off" },
                tokens as f64 / seconds
            ));
            replies.push(answer.content);
        }
        line.push_str(if replies[0] == replies[1] { "; same reply" } else { "; DIFFERENT replies" });
        println!("{line}");
    }
    let off_rate = off_tokens as f64 / off_seconds;
    let on_rate = on_tokens as f64 / on_seconds;
    let drafted = on.stats().drafted_tokens() - drafted;
    let accepted = on.stats().accepted_draft_tokens() - accepted;
    println!(
        "lookup off {off_rate:.2} tokens/s, on {on_rate:.2} tokens/s: {:.2}x; with lookup {} of {drafted} guessed tokens \
         kept, {} decodes for {on_tokens} tokens; load now {}",
        on_rate / off_rate,
        accepted,
        on.stats().decode_calls() - decodes,
        load_average()
    );
    println!("reply:\n{}", first_on.content);
}
