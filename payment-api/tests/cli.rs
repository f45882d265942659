//! `payment-api --help` documents every flag with its environment variable, and never a secret.

use std::process::Command;

#[test]
fn help_lists_every_flag_with_its_env_var() {
    let output = Command::new(env!("CARGO_BIN_EXE_payment-api"))
        .arg("--help")
        .env("PAYMENT_API_KEYS", "acme:secret-key-never-shown")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "PAYMENT_API_LISTEN"),
        ("--bank-url", "BANK_URL"),
        ("--api-keys", "PAYMENT_API_KEYS"),
        ("--api-keys-file", "PAYMENT_API_KEYS_FILE"),
        ("--data-dir", "PAYMENT_API_DATA_DIR"),
        ("--log-format", "LOG_FORMAT"),
        ("--max-in-flight", "PAYMENT_API_MAX_IN_FLIGHT"),
        ("--rate-limit", "PAYMENT_API_RATE_LIMIT"),
        ("--rate-limit-burst", "PAYMENT_API_RATE_LIMIT_BURST"),
        ("--request-timeout-ms", "PAYMENT_API_REQUEST_TIMEOUT_MS"),
        ("--max-headers", "PAYMENT_API_MAX_HEADERS"),
        ("--max-header-bytes", "PAYMENT_API_MAX_HEADER_BYTES"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        assert!(help.contains(env), "{env} missing from --help:\n{help}");
    }
    assert!(
        !help.contains("secret-key-never-shown"),
        "--help printed an API key"
    );
}

#[test]
fn starting_without_api_keys_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_payment-api"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("PAYMENT_API_KEYS")
        .env_remove("PAYMENT_API_KEYS_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PAYMENT_API_KEYS"), "stderr: {stderr}");
}

#[test]
fn a_request_timeout_under_the_payment_deadline_is_refused_at_start() {
    let dir = tempfile::Builder::new()
        .prefix("api-cli-")
        .tempdir()
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_payment-api"))
        .args(["--listen", "127.0.0.1:0", "--deadline-ms", "10000"])
        .args(["--request-timeout-ms", "5000"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("PAYMENT_API_KEYS", "acme:0123456789abcdef")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--request-timeout-ms") && stderr.contains("--deadline-ms"),
        "stderr: {stderr}"
    );
}
