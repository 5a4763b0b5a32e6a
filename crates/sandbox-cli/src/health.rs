//! `health URL` (`rlm health`, `rlm-sandbox health`): one HTTP GET for container health checks (the runtime images
//! have no curl).
//!
//! Exit code 0 when the answer is `2xx`, 1 otherwise (another status, no answer, timeout). The status line is
//! printed either way. Only plain `http://` is supported: a health check talks to its own container on loopback.

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::seconds;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The URL to GET, e.g. http://127.0.0.1:8080/health.
    pub url: String,
    /// Seconds to wait for the whole answer.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

/// The parts of an `http://host[:port][/path]` URL.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("only http:// URLs are supported, got {url:?}");
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_owned()),
        Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
        None => (rest, "/".to_owned()),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // [v6 address]:port
        let Some((host, after)) = bracketed.split_once(']') else { bail!("bad IPv6 address in {url:?}") };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => bail!("bad address in {url:?}"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || authority.contains('@') {
        bail!("bad host in {url:?}");
    }
    let port = match port {
        Some(port) => port.parse().with_context(|| format!("bad port in {url:?}"))?,
        None => 80,
    };
    Ok(Target { host: host.to_owned(), port, path })
}

/// The status code from an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(status_line: &str) -> Option<u16> {
    let mut parts = status_line.split_whitespace();
    parts.next().filter(|version| version.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

async fn get_status_line(target: &Target) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("cannot connect to {}:{}", target.host, target.port))?;
    let host = if target.host.contains(':') { format!("[{}]", target.host) } else { target.host.clone() };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: rlm-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.port
    );
    stream.write_all(request.as_bytes()).await.context("cannot send the request")?;
    // Only the status line matters; read until its end (or a small cap).
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 8192 {
        let read = stream.read(&mut buffer).await.context("cannot read the answer")?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    if line.is_empty() {
        bail!("the server closed the connection without an answer");
    }
    Ok(line)
}

pub async fn health(args: HealthArgs) -> Result<ExitCode> {
    let timeout = seconds(args.timeout, "timeout")?;
    let target = parse_url(&args.url)?;
    let outcome = match tokio::time::timeout(timeout, get_status_line(&target)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(anyhow::anyhow!("no answer within {:.1} s", timeout.as_secs_f64())),
    };
    match outcome {
        Ok(line) => match status_code(&line) {
            Some(code) if (200..300).contains(&code) => {
                println!("{}: {}", args.url, line);
                Ok(ExitCode::SUCCESS)
            }
            Some(_) => {
                println!("{}: {}", args.url, line);
                Ok(ExitCode::FAILURE)
            }
            None => {
                eprintln!("{}: not an HTTP answer: {line:?}", args.url);
                Ok(ExitCode::FAILURE)
            }
        },
        Err(err) => {
            eprintln!("{}: {err:#}", args.url);
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn target(host: &str, port: u16, path: &str) -> Target {
        Target { host: host.to_owned(), port, path: path.to_owned() }
    }

    #[test]
    fn urls_are_split_into_host_port_and_path() {
        assert_eq!(parse_url("http://127.0.0.1:8080/health").unwrap(), target("127.0.0.1", 8080, "/health"));
        assert_eq!(parse_url("http://localhost/ready").unwrap(), target("localhost", 80, "/ready"));
        assert_eq!(parse_url("http://example:81").unwrap(), target("example", 81, "/"));
        assert_eq!(parse_url("http://h:1?x=1").unwrap(), target("h", 1, "/?x=1"));
        assert_eq!(parse_url("http://[::1]:8000/health").unwrap(), target("::1", 8000, "/health"));
        assert!(parse_url("https://127.0.0.1/health").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://host:port/").is_err());
        assert!(parse_url("http://user@host/").is_err());
    }

    #[test]
    fn status_codes_come_from_the_status_line() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code("HTTP/1.1 abc"), None);
    }
}
