//! The one way an HTTP API (approver, auditor, chat callbacks) answers a failed request: a
//! status and a JSON body `{"error": "…"}`, with the bearer challenge on a 401 and
//! `Retry-After` when the database is unavailable. The MCP endpoint answers in JSON-RPC instead.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A failed API request, as the client will read it.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
    challenge: Option<String>,
    retry_after: bool,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
            challenge: None,
            retry_after: false,
        }
    }

    /// 401 with `WWW-Authenticate: Bearer realm=…` (and `error="invalid_token"` when a token
    /// was presented and refused, RFC 6750).
    pub fn unauthorized(realm: &str, token_presented: bool, message: impl Into<String>) -> Self {
        let invalid = if token_presented {
            r#", error="invalid_token""#
        } else {
            ""
        };
        HttpError {
            challenge: Some(format!(r#"Bearer realm="{realm}"{invalid}"#)),
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    /// 503 with `Retry-After`: the store is unavailable, nothing was decided.
    pub fn unavailable(message: impl Into<String>) -> Self {
        HttpError {
            retry_after: true,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({"error": self.message})),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(value) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(crate::store::RETRY_AFTER_SECS),
            );
        }
        response
    }
}
