//! Test doubles for the flow's unit tests: a store that fails on demand around a real SQLite
//! store, and a bank whose every answer is scripted. With them each pipeline outcome and each
//! store fault the flow must survive can be produced exactly, in process.

mod bank;
mod store;

pub(crate) use bank::{
    charge_placeholder as bank_charge_placeholder, charged as bank_charged, ScriptedBank,
};
pub(crate) use store::{Fault, FaultyStore, Op};

/// A fresh directory under the system temp dir named `<prefix>-…`, removed (with everything in
/// it) when dropped, pass or fail: a test holds it for as long as the store in it is used.
pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .unwrap()
}
