//! `GET /v1/chaos` (open), `PUT /v1/chaos` (admin token when configured) and
//! `GET /v1/chaos/presets`: reading and replacing the chaos in effect at run time.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use payment_types::{
    bank::{ChaosUpdate, Preset, PresetInfo},
    Problem,
};

use super::AppState;
use crate::{auth, chaos::presets, error::ApiError};

/// The chaos in effect (profile, scenario, seed).
#[utoipa::path(get, path = "/v1/chaos", tag = "chaos",
    responses((status = 200, description = "The chaos state", body = Object)))]
pub(super) async fn show(State(state): State<Arc<AppState>>) -> Response {
    Json(state.chaos.state()).into_response()
}

/// Replaces the chaos: `{"preset": NAME}`, `{"scenario": [{"at_ms", "preset"}]}` or a
/// whole profile. Needs `Authorization: Bearer <admin token>` when one is configured.
#[utoipa::path(put, path = "/v1/chaos", tag = "chaos",
    request_body(content = Object, description = "A preset, a scenario or a profile"),
    responses(
        (status = 200, description = "The chaos state now in effect", body = Object),
        (status = 400, description = "`invalid_body`: not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`body_too_large`: a body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_chaos`: rates out of range, an unknown preset, an empty or unsorted scenario", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = [])))]
pub(super) async fn replace(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ChaosUpdate>, JsonRejection>,
) -> Response {
    let result = (|| {
        auth::require_admin(&headers, state.admin_token.as_ref())?;
        let Json(update) = body.map_err(|rejection| match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::InvalidChaos(rejection.body_text()),
            _ => ApiError::from_json(&rejection),
        })?;
        state.chaos.apply(update).map_err(ApiError::InvalidChaos)
    })();
    match result {
        Ok(chaos) => Json(chaos).into_response(),
        Err(error) => {
            tracing::warn!(%error, "chaos update refused");
            error.into_response()
        }
    }
}

/// Every named preset and its profile.
#[utoipa::path(get, path = "/v1/chaos/presets", tag = "chaos",
    responses((status = 200, description = "`[{name, profile}]`", body = Object)))]
pub(super) async fn presets() -> Response {
    let all: Vec<PresetInfo> = Preset::ALL
        .into_iter()
        .map(|name| PresetInfo {
            name,
            profile: presets::profile(name),
        })
        .collect();
    Json(all).into_response()
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::routes::{router, test_support::state_with};

    async fn put(
        state: &Arc<AppState>,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut builder = Request::put("/v1/chaos").header("content-type", "application/json");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = builder.body(Body::from(body.to_owned())).unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn with_a_token_configured_put_needs_it() {
        let state = state_with(Some("tkn"));
        let (status, problem) = put(&state, None, r#"{"preset":"down"}"#).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("unauthorized"))
        );
        assert_eq!(
            put(&state, Some("wrong"), r#"{"preset":"down"}"#).await.0,
            401
        );
        let (status, chaos) = put(&state, Some("tkn"), r#"{"preset":"down"}"#).await;
        assert_eq!((status, chaos["preset"].as_str()), (200, Some("down")));
    }

    #[tokio::test]
    async fn a_partial_profile_put_replaces_the_profile() {
        let state = state_with(None);
        let (status, chaos) = put(&state, None, r#"{"error_rate":0.25}"#).await;
        assert_eq!(status, 200);
        assert!(chaos["preset"].is_null());
        assert_eq!(chaos["profile"]["error_rate"], 0.25);
        assert_eq!(chaos["profile"]["hold_max_ms"], 30000);
    }

    #[tokio::test]
    async fn invalid_updates_are_422_or_400() {
        let state = state_with(None);
        assert_eq!(put(&state, None, r#"{"error_rate":3}"#).await.0, 422);
        assert_eq!(put(&state, None, r#"{"preset":"nope"}"#).await.0, 422);
        assert_eq!(put(&state, None, r#"{"scenario":[]}"#).await.0, 422);
        assert_eq!(put(&state, None, "{").await.0, 400);
    }
}
