//! How `OpenAiClient` uses its connections to a plain-`http` server: kept and reused, replaced when the server has
//! closed them, redirects followed, failures reported. A hand-written HTTP/1.1 server shows what went over the wire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rlm_models::{OpenAiClient, OpenAiConfig};
use rlm_protocol::{Error, ModelClient};
use rlm_test_support::{Reply, ScriptedServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::request;

/// What the hand-written server does after reading a request.
#[derive(Clone, Copy)]
enum Then {
    /// Answers, and keeps the connection open for the next request.
    Answer,
    /// Answers, then closes the connection a moment later (as servers do with idle connections, without saying so).
    AnswerAndClose,
    /// Closes the connection without answering.
    Hang,
    /// Answers `307 Temporary Redirect` to the URL the server was given.
    Redirect,
}

/// The requests a hand-written server read (head and body as text), and on which connection.
#[derive(Default)]
struct Seen {
    connections: usize,
    requests: Vec<(usize, String)>,
}

const ANSWER: &str = r#"{"model":"m","choices":[{"message":{"role":"assistant","content":"over plain http"}}]}"#;

async fn hand_written_server(then: Then, redirect_to: Option<String>) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let connection = {
                let mut seen = shared.lock().unwrap();
                seen.connections += 1;
                seen.connections
            };
            tokio::spawn(serve(stream, connection, then, redirect_to.clone(), Arc::clone(&shared)));
        }
    });
    (base_url, seen)
}

async fn serve(
    mut stream: TcpStream,
    connection: usize,
    then: Then,
    redirect_to: Option<String>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else { return };
        seen.lock().unwrap().requests.push((connection, request));
        let response = match then {
            Then::Hang => return,
            Then::Redirect => format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {}\r\ncontent-length: 0\r\n\r\n",
                redirect_to.as_deref().unwrap()
            ),
            Then::Answer | Then::AnswerAndClose => format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER}",
                ANSWER.len()
            ),
        };
        stream.write_all(response.as_bytes()).await.unwrap();
        if matches!(then, Then::AnswerAndClose) {
            // A moment later, when the client has put the connection aside for the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        }
    }
}

/// One request (head and `content-length` body) from `stream`; `None` at the end of the connection.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            if buffer.len() >= end + 4 + length {
                let request = String::from_utf8_lossy(&buffer[..end + 4 + length]).into_owned();
                buffer.drain(..end + 4 + length);
                return Some(request);
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn client(base_url: &str) -> OpenAiClient {
    let config = OpenAiConfig {
        max_retries: 0,
        request_timeout: Duration::from_secs(10),
        ..OpenAiConfig::new(base_url).with_api_key("sk-plain")
    };
    OpenAiClient::new(config).unwrap()
}

#[tokio::test]
async fn requests_to_a_plain_http_server_share_one_connection() {
    let (base_url, seen) = hand_written_server(Then::Answer, None).await;
    let client = client(&base_url);
    for _ in 0..3 {
        let response = client.complete(request("m")).await.unwrap();
        assert_eq!(response.content, "over plain http");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections, 1);
    assert_eq!(seen.requests.len(), 3);
    let (_, first) = &seen.requests[0];
    let head = first.to_lowercase();
    assert!(first.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"), "{first}");
    let port = base_url.trim_start_matches("http://").trim_end_matches("/v1");
    for header in [
        format!("host: {port}"),
        "content-type: application/json".to_owned(),
        "authorization: bearer sk-plain".to_owned(),
        format!("user-agent: rlm/{}", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(head.contains(&format!("\r\n{header}\r\n")), "no {header:?} in {first}");
    }
    let body = &first[first.find("\r\n\r\n").unwrap() + 4..];
    assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{first}");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["messages"][1]["content"], "hello");
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_without_an_error() {
    let (base_url, seen) = hand_written_server(Then::AnswerAndClose, None).await;
    let client = client(&base_url);
    for _ in 0..3 {
        // No retries are allowed: each request must find a working connection at once.
        let response = client.complete(request("m")).await.unwrap();
        assert_eq!(response.content, "over plain http");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections, 3);
    let connections: Vec<usize> = seen.requests.iter().map(|(connection, _)| *connection).collect();
    assert_eq!(connections, [1, 2, 3], "each request sent once, each on its own connection");
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_retryable_failure() {
    let (base_url, seen) = hand_written_server(Then::Hang, None).await;
    let err = client(&base_url).complete(request("m")).await.unwrap_err();
    let Error::Model { status, message, retryable } = &err else { panic!("unexpected error {err:?}") };
    assert_eq!(*status, None);
    assert!(retryable);
    assert!(message.starts_with(&format!("request to {base_url} failed: ")), "{message}");
    assert_eq!(seen.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn redirects_are_followed_with_the_request() {
    let target = ScriptedServer::builder().script("m", [Reply::text("after the redirect")]).start().await.unwrap();
    let location = format!("{}/chat/completions", target.base_url());
    let (base_url, seen) = hand_written_server(Then::Redirect, Some(location)).await;
    let response = client(&base_url).complete(request("m")).await.unwrap();
    assert_eq!(response.content, "after the redirect");
    assert_eq!(target.requests()[0].last_user_message(), Some("hello"));
    // Once directly, once more through the general client, which then follows the redirect.
    assert_eq!(seen.lock().unwrap().requests.len(), 2);
}
