//! Raw HTTP/1.1 over a socket, for the tests of answers a client library would not let through
//! (bodies over the limit, malformed paths and queries, chunked bodies, requests that stall),
//! and the check that such an answer is a problem with the expected status and `code`. Used by
//! the services' own suites (`mock-bank/tests/api/openapi.rs`,
//! `payment-api/tests/openapi_contract.rs`).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` as raw bytes to `addr` (`host:port`) and reads the answer (within 20 s):
/// returns its status, its head (lower-case) and its body as JSON (`Null` if it is not JSON).
pub async fn raw(addr: impl tokio::net::ToSocketAddrs, request: &[u8]) -> (u16, String, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
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

/// Asserts that an answer of [`raw`] is an `application/problem+json` with status `want` (on
/// the status line and in the body) and `code`; `what` names the request in the message.
pub fn assert_problem(
    what: &str,
    (status, head, body): &(u16, String, Value),
    want: u16,
    code: &str,
) {
    assert_eq!(*status, want, "{what}: {head}\n{body}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{what}: {head}"
    );
    assert_eq!(body["code"], code, "{what}: {body}");
    assert_eq!(body["status"], want, "{what}: {body}");
}
