//! Errors from the HTTP layer are problems too (issue 16, point 3): the router's 404 and 405,
//! the body limit (announced or chunked), media type, malformed JSON and path parameters that
//! do not decode, over a real socket. The constraints of the bank's document are walked against
//! a running bank in `payment-api/tests/openapi_contract.rs`.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::spawn_bank;

/// Sends raw bytes; the status, the head (lower-case) and the body of the answer.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if let Some(end) = find(&answer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|len| answer.len() >= end + 4 + len) {
                    break;
                }
            }
        }
    });
    read.await.expect("an answer in time");
    let end = find(&answer, b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_slice(&answer[end + 4..]).unwrap_or(Value::Null);
    (status, head, body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn assert_problem(what: &str, (status, head, body): &(u16, String, Value), want: u16, code: &str) {
    assert_eq!(*status, want, "{what}: {head}\n{body}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{what}: {head}"
    );
    assert_eq!(body["code"], code, "{what}: {body}");
}

#[tokio::test]
async fn errors_from_the_http_layer_are_problem_json_with_a_code() {
    let bank = spawn_bank().await;
    let addr = bank.addr;
    let answer = raw(addr, b"GET /nope HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_problem("unknown route", &answer, 404, "not_found");
    let answer = raw(addr, b"GET /docs/nope.js HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_problem("unknown docs asset", &answer, 404, "not_found");
    let answer = raw(addr, b"DELETE /v1/charges HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_problem("DELETE", &answer, 405, "method_not_allowed");
    assert!(
        answer.1.contains("\r\nallow: "),
        "405 names the allowed methods: {}",
        answer.1
    );
    let answer = raw(addr, b"GET /v1/charges/%FF HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_problem("bad path", &answer, 400, "invalid_path");
    for query in ["limit=abc", "limit=0", "limit=1001", "after=x", "nope=1"] {
        let request = format!("GET /v1/ledger?{query} HTTP/1.1\r\nhost: t\r\n\r\n");
        assert_problem(
            query,
            &raw(addr, request.as_bytes()).await,
            400,
            "invalid_query",
        );
    }
    let answer = raw(addr, b"GET /v1/logs?limit=1001 HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_problem("logs limit", &answer, 400, "invalid_query");
    let post = |content_type: &str, body: &str| {
        format!(
            "POST /v1/charges HTTP/1.1\r\nhost: t\r\nidempotency-key: r1\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let answer = raw(addr, post("text/plain", "{}").as_bytes()).await;
    assert_problem("text/plain", &answer, 415, "unsupported_media_type");
    let answer = raw(addr, post("application/json", "{\"amount\":").as_bytes()).await;
    assert_problem("truncated JSON", &answer, 400, "invalid_body");
    // Over the 64 KiB limit: announced by Content-Length (no body sent), and chunked.
    for length in [2 * 1024 * 1024, 64 * 1024 + 1] {
        let request = format!(
            "POST /v1/charges HTTP/1.1\r\nhost: t\r\nidempotency-key: r2\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        let answer = raw(addr, request.as_bytes()).await;
        assert_problem(&format!("{length} bytes"), &answer, 413, "body_too_large");
    }
    let chunk = "x".repeat(64 * 1024 + 1);
    let request = format!(
        "POST /v1/charges HTTP/1.1\r\nhost: t\r\nidempotency-key: r3\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    assert_problem(
        "chunked",
        &raw(addr, request.as_bytes()).await,
        413,
        "body_too_large",
    );
}
