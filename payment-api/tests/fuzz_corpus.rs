//! Replays the fuzz corpus under `cargo test` on stable: every seed in `fuzz/seeds/<target>/` and
//! every saved crashing input in `fuzz/regressions/<target>/` goes through the same property
//! checks as the cargo-fuzz target of that name (the checks are `fuzz/src/lib.rs`, included here),
//! so a crash found once by the fuzzer stays fixed. See docs/fuzzing.md.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[allow(unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod properties;

/// A property check: panics when the input breaks a property.
type Check = fn(&[u8]);

/// The fuzz targets and their checks; a corpus directory is named after its target.
const TARGETS: [(&str, Check); 3] = [
    ("payment_body", properties::check_payment_body),
    ("idempotency_key", properties::check_idempotency_key),
    ("canonical_json", properties::check_canonical_json),
];

/// The fewest seed files each target must have, so an emptied or moved corpus fails loudly
/// instead of passing on nothing.
const MIN_SEEDS_PER_TARGET: usize = 8;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files directly in `dir`, sorted; none when `dir` does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file in `dir`; returns how many files it read and the failures (the
/// file and the panic message).
fn replay(dir: &Path, check: Check) -> (usize, Vec<String>) {
    let files = files_in(dir);
    let mut failures = Vec::new();
    for file in &files {
        let bytes = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(&bytes))) {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failures.push(format!("{}: {message}", file.display()));
        }
    }
    (files.len(), failures)
}

#[test]
fn every_seed_and_regression_holds_the_fuzz_properties() {
    let root = fuzz_dir();
    let mut failures = Vec::new();
    let mut total = 0;
    for (target, check) in TARGETS {
        let (seeds, seed_failures) = replay(&root.join("seeds").join(target), check);
        assert!(
            seeds >= MIN_SEEDS_PER_TARGET,
            "fuzz/seeds/{target} has {seeds} files, expected at least {MIN_SEEDS_PER_TARGET}"
        );
        let (regressions, regression_failures) =
            replay(&root.join("regressions").join(target), check);
        total += seeds + regressions;
        failures.extend(seed_failures);
        failures.extend(regression_failures);
    }
    assert!(
        total >= TARGETS.len() * MIN_SEEDS_PER_TARGET,
        "read only {total} corpus files"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} corpus files break a fuzz property:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn no_corpus_directory_is_named_after_a_target_that_does_not_exist() {
    // A renamed target would otherwise leave its corpus silently unreplayed.
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("readable directory entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(target, _)| *target == name),
                "fuzz/{kind}/{name} is not a fuzz target this test replays"
            );
        }
    }
}
