//! Timed scenarios over HTTP, with short offsets and readiness polling.

use std::time::Duration;

use payment_types::bank::Preset;
use serde_json::json;

use crate::helpers::{eventually, spawn_bank};

#[tokio::test]
async fn a_scenario_switches_presets_at_its_offsets() {
    let bank = spawn_bank().await;
    let state = bank
        .put_chaos(json!({"scenario": [
            {"at_ms": 0, "preset": "healthy"},
            {"at_ms": 300, "preset": "down"},
            {"at_ms": 700, "preset": "healthy"}
        ]}))
        .await;
    let scenario = state.scenario.expect("the scenario is visible");
    assert_eq!(scenario.current_step, Some(0));
    assert_eq!(state.preset, Some(Preset::Healthy));

    eventually(Duration::from_secs(3), "the down step", || async {
        bank.chaos().await.preset == Some(Preset::Down)
    })
    .await;
    let response = bank.charge("during-down", "tok_visa").await;
    // The down step lasts 400 ms; a slow machine might have moved on, which the state shows.
    if bank.chaos().await.scenario.unwrap().current_step == Some(1) {
        assert_eq!(response.status(), 503);
    }

    eventually(Duration::from_secs(3), "the last step", || async {
        bank.chaos().await.scenario.unwrap().finished
    })
    .await;
    let state = bank.chaos().await;
    assert_eq!(state.preset, Some(Preset::Healthy));
    assert_eq!(bank.charge("after", "tok_visa").await.status(), 201);
    let status = bank.status().await;
    assert_eq!(status.chaos.scenario.unwrap().current_step, Some(2));
}

#[tokio::test]
async fn a_preset_put_ends_a_running_scenario() {
    let bank = spawn_bank().await;
    bank.put_chaos(json!({"scenario": [{"at_ms": 0, "preset": "down"}]}))
        .await;
    assert_eq!(bank.charge("r1", "tok_visa").await.status(), 503);
    let state = bank.put_chaos(json!({"preset": "healthy"})).await;
    assert!(state.scenario.is_none());
    assert_eq!(bank.charge("r1", "tok_visa").await.status(), 201);
}
