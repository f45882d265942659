//! `dashboard --help` documents every flag with its environment variable, and never a secret;
//! a bad bank list stops the dashboard at start with an error naming the flag.

use std::process::Command;

#[test]
fn help_lists_every_flag_with_its_env_var() {
    let output = Command::new(env!("CARGO_BIN_EXE_dashboard"))
        .arg("--help")
        .env("DASHBOARD_API_KEY", "secret-key-never-shown")
        .env("DASHBOARD_BANK_ADMIN_TOKEN", "a=bank-token-never-shown")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "DASHBOARD_LISTEN"),
        ("--api-url", "API_URL"),
        ("--bank-url", "BANK_URL"),
        ("--bank <NAME=URL>", "DASHBOARD_BANKS"),
        (
            "--bank-admin-token <[NAME=]TOKEN>",
            "DASHBOARD_BANK_ADMIN_TOKEN",
        ),
        ("--api-key", "DASHBOARD_API_KEY"),
        ("--api-key-file", "DASHBOARD_API_KEY_FILE"),
        (
            "--bank-admin-token-file <[NAME=]PATH>",
            "DASHBOARD_BANK_ADMIN_TOKEN_FILE",
        ),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        assert!(help.contains(env), "{env} missing from --help:\n{help}");
    }
    assert!(
        !help.contains("secret-key-never-shown") && !help.contains("bank-token-never-shown"),
        "--help printed a secret"
    );
    for words in ["NAME=URL", "NAME=PATH", "NAME=TOKEN"] {
        assert!(help.contains(words), "{words} missing from --help:\n{help}");
    }
}

#[test]
fn bank_and_bank_url_together_stop_the_dashboard_naming_both() {
    let output = Command::new(env!("CARGO_BIN_EXE_dashboard"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--bank",
            "a=http://127.0.0.1:8001",
            "--bank-url",
            "http://127.0.0.1:8002",
        ])
        .env_remove("DASHBOARD_BANKS")
        .env_remove("BANK_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--bank (DASHBOARD_BANKS)") && stderr.contains("--bank-url"),
        "{stderr}"
    );
}
