//! Errors from the HTTP layer are problems too (issue 16, point 3): the router's 404 and 405,
//! the body limit (announced or chunked), media type, malformed JSON and path parameters that
//! do not decode, over a real socket. The constraints of the bank's document are walked against
//! a running bank in `payment-api/tests/openapi_contract.rs`.

use e2e::raw_http::{assert_problem, raw};

use crate::helpers::spawn_bank;

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
