//! `run --help` documents every flag with its environment variable.

use std::process::Command;

#[test]
fn help_lists_every_flag_with_its_env_var() {
    let output = Command::new(env!("CARGO_BIN_EXE_run"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--api-port", "RUN_API_PORT"),
        ("--bank-port", "RUN_BANK_PORT"),
        ("--dashboard-port", "RUN_DASHBOARD_PORT"),
        ("--data-dir", "RUN_DATA_DIR"),
        ("--database-url", "DATABASE_URL"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        assert!(help.contains(env), "{env} missing from --help:\n{help}");
    }
}
