//! `mock-bank --help` names every flag and its environment variable, and never a secret.

use std::process::Command;

#[test]
fn help_lists_every_flag_with_its_env_var_and_hides_the_token_value() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-bank"))
        .arg("--help")
        .env("MOCK_BANK_ADMIN_TOKEN", "do-not-print-me")
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "MOCK_BANK_LISTEN"),
        ("--seed", "MOCK_BANK_SEED"),
        ("--chaos", "MOCK_BANK_CHAOS"),
        ("--admin-token", "MOCK_BANK_ADMIN_TOKEN"),
        ("--admin-token-file", "MOCK_BANK_ADMIN_TOKEN_FILE"),
        ("--max-in-flight", "MOCK_BANK_MAX_IN_FLIGHT"),
        ("--max-held", "MOCK_BANK_MAX_HELD"),
        ("--max-charges", "MOCK_BANK_MAX_CHARGES"),
        ("--log-format", "LOG_FORMAT"),
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
        assert!(help.contains(env), "{env} missing from:\n{help}");
    }
    assert!(
        !help.contains("do-not-print-me"),
        "the token leaked into --help:\n{help}"
    );
}

#[test]
fn an_unknown_preset_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-bank"))
        .args(["--chaos", "sideways"])
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("blackhole"), "{stderr}");
}
