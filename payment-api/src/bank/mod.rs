//! Talking to the bank: the HTTP client and what each attempt's answer means.

mod client;

pub(crate) use client::{AttemptOutcome, BankClient};
