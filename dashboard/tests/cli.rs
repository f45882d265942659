//! `dashboard --help` documents every flag with its environment variable, and never a secret.

use std::process::Command;

#[test]
fn help_lists_every_flag_with_its_env_var() {
    let output = Command::new(env!("CARGO_BIN_EXE_dashboard"))
        .arg("--help")
        .env("DASHBOARD_API_KEY", "secret-key-never-shown")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "DASHBOARD_LISTEN"),
        ("--api-url", "API_URL"),
        ("--bank-url", "BANK_URL"),
        ("--api-key", "DASHBOARD_API_KEY"),
        ("--api-key-file", "DASHBOARD_API_KEY_FILE"),
        ("--bank-admin-token-file", "DASHBOARD_BANK_ADMIN_TOKEN_FILE"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        assert!(help.contains(env), "{env} missing from --help:\n{help}");
    }
    assert!(
        !help.contains("secret-key-never-shown"),
        "--help printed a secret"
    );
}
