//! Load time, prompt and generation speed, the conversation cache at work, and generation with prompt lookup off
//! against on, on a GGUF file:
//! `cargo run --release -p rlm-models-llama --example speed -- MODEL.gguf [THREADS] [all|lookup|batch] [ROUNDS]`
//! (`lookup` measures only lookup off against on; `batch` only what a decode of 1 to 16 tokens costs, which is what a
//! guessed token costs).

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
    if mode == "batch" {
        decode_cost(&path, threads.unwrap_or(1), rounds);
        return;
    }
    if mode != "lookup" {
        basics(load(true)).await;
    }
    let (off, on) = (load(false), load(true));
    lookup_off_and_on(&off, &on, "one RLM turn", rlm_turn(), rounds).await;
    lookup_off_and_on(&off, &on, "a turn that copies printed output", copying_turn(), rounds).await;
}

/// CPU seconds used by this process's threads so far (from the scheduler's per-thread counters, in nanoseconds):
/// on a machine shared with other work it measures the work done, which wall time does not.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return f64::NAN };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}

/// What one decode of n tokens costs against a decode of one, at the end of a 1,000-token sequence, as prompt lookup
/// decodes a generating sequence's next token and its guesses. Each decode is rolled back before the next.
fn decode_cost(path: &str, threads: u32, rounds: usize) {
    use std::num::NonZeroU32;

    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::LlamaModel;
    use llama_cpp_2::model::params::LlamaModelParams;

    let backend = LlamaBackend::init().unwrap();
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default()).unwrap();
    let threads = i32::try_from(threads).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(4096))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut context = model.new_context(&backend, params).unwrap();
    let text = "def handle(record):\n    print(record['name'], record['value'])\n".repeat(60);
    let tokens = model.vocab().tokenize(text.as_bytes(), true, true);
    let tokens = &tokens[..tokens.len().min(1000)];
    let mut batch = LlamaBatch::new(512, 1);
    for (chunk_start, chunk) in (0..).step_by(512).zip(tokens.chunks(512)) {
        batch.clear();
        for (pos, &token) in (chunk_start..).zip(chunk) {
            batch.add(token, pos, &[0], false).unwrap();
        }
        context.decode(&mut batch).unwrap();
    }
    let end = i32::try_from(tokens.len()).unwrap();
    let sizes = [1_usize, 2, 3, 5, 9, 17];
    let mut cpu = vec![0.0; sizes.len()];
    let mut wall = vec![0.0; sizes.len()];
    println!(
        "decode cost by batch size: {rounds} rounds after {end} tokens, threads {threads}, load {}",
        load_average()
    );
    for _ in 0..rounds {
        for (index, &size) in sizes.iter().enumerate() {
            batch.clear();
            for (pos, &token) in (end..).zip(&tokens[..size]) {
                batch.add(token, pos, &[0], true).unwrap();
            }
            let (cpu_before, started) = (cpu_seconds(), Instant::now());
            context.decode(&mut batch).unwrap();
            cpu[index] += cpu_seconds() - cpu_before;
            wall[index] += started.elapsed().as_secs_f64();
            context.kv_cache_seq_rm(0, Some(u32::try_from(end).unwrap()), None).unwrap();
        }
    }
    for (index, size) in sizes.iter().enumerate() {
        println!(
            "{size:>2} tokens: {:.1} ms CPU ({:.2}x one token), {:.1} ms wall ({:.2}x)",
            cpu[index] * 1e3 / rounds as f64,
            cpu[index] / cpu[0],
            wall[index] * 1e3 / rounds as f64,
            wall[index] / wall[0]
        );
    }
    println!("load now {}", load_average());
}

async fn basics(client: LlamaClient) {
    let info = client.info();
    println!("loaded in {:.2} s: n_ctx_train {}, threads {}", info.load_seconds, info.n_ctx_train, info.threads);

    let text = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    let mut messages = vec![ChatMessage::system("You are terse."), ChatMessage::user(format!("{text}\nSay hi."))];
    let ask = |messages: Vec<ChatMessage>| ModelRequest {
        model: "m".to_owned(),
        messages: messages.into(),
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

/// The RLM turn, asking for what a model writes when it quotes what it read: the best case of prompt lookup.
fn copying_turn() -> Vec<ChatMessage> {
    let mut messages = rlm_turn();
    if let Some(last) = messages.last_mut() {
        let output = last.content.split("\n\nWrite code").next().unwrap_or_default().to_owned();
        last.content = format!(
            "{output}\n\nWrite code that stores the first six passages printed above, copied exactly, in a list of \
             strings named `passages`, then prints how many mention operator_2."
        );
    }
    messages
}

/// Generation speed with prompt lookup off and on, on the same turn with the same (greedy) sampling; the two runs of
/// each round are interleaved, alternating which goes first, so load from other work falls on both alike.
async fn lookup_off_and_on(
    off: &LlamaClient,
    on: &LlamaClient,
    label: &str,
    messages: Vec<ChatMessage>,
    rounds: usize,
) {
    let request = ModelRequest {
        model: "m".to_owned(),
        messages: messages.into(),
        max_output_tokens: Some(320),
        temperature: Some(0.0),
    };
    println!("lookup off vs on: {rounds} rounds of {label} (320 tokens at most), threads {}", on.info().threads);
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
    let (mut off_cpu, mut on_cpu) = (0.0, 0.0);
    let (drafted, accepted, decodes) =
        (on.stats().drafted_tokens(), on.stats().accepted_draft_tokens(), on.stats().decode_calls());
    for round in 0..rounds {
        let order: [(&LlamaClient, bool); 2] =
            if round % 2 == 0 { [(off, false), (on, true)] } else { [(on, true), (off, false)] };
        let mut line = format!("round {}: load {}", round + 1, load_average());
        let mut replies = Vec::new();
        for (client, lookup) in order {
            let (started, cpu_before) = (Instant::now(), cpu_seconds());
            let answer = client.complete(request.clone()).await.unwrap();
            let seconds = started.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu_before;
            let tokens = answer.usage.completion_tokens;
            if lookup {
                (on_seconds, on_cpu, on_tokens) = (on_seconds + seconds, on_cpu + cpu, on_tokens + tokens);
            } else {
                (off_seconds, off_cpu, off_tokens) = (off_seconds + seconds, off_cpu + cpu, off_tokens + tokens);
            }
            line.push_str(&format!(
                "; lookup {}: {tokens} tokens in {seconds:.2} s = {:.2} tokens/s ({cpu:.2} s CPU)",
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
        "lookup off {off_rate:.2} tokens/s, on {on_rate:.2} tokens/s: {:.2}x; per CPU second {:.2} against {:.2}: \
         {:.2}x; with lookup {} of {drafted} guessed tokens kept, {} decodes for {on_tokens} tokens; load now {}",
        on_rate / off_rate,
        off_tokens as f64 / off_cpu,
        on_tokens as f64 / on_cpu,
        (on_tokens as f64 / on_cpu) / (off_tokens as f64 / off_cpu),
        accepted,
        on.stats().decode_calls() - decodes,
        load_average()
    );
    println!("reply:\n{}", first_on.content);
}
