//! Talking to the bank: the HTTP client, what each attempt's answer means, and the gateway that
//! runs every charge through the resilience pipeline.

mod client;
mod gateway;

pub(crate) use client::{AttemptOutcome, BankClient, Lookup};
pub(crate) use gateway::{BankGateway, ChargeOutcome};
