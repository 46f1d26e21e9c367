//! What goes wrong in the console, each answered with a page that says so.

use super::html::{esc, page};
use super::oidc::OidcError;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No live session: sign in (again).
    #[error("please sign in")]
    SignIn,
    /// The request's CSRF token is missing or not this session's.
    #[error(
        "this form was not accepted: its security token is missing or stale; reload the page and try again"
    )]
    Csrf,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Idp(#[from] OidcError),
    /// The database or the audit log failed; details are logged, not shown.
    #[error("{0}")]
    Unavailable(String),
}

impl From<crate::approval::BrokerError> for ConsoleError {
    fn from(e: crate::approval::BrokerError) -> Self {
        match e {
            crate::approval::BrokerError::NotFound(id) => {
                ConsoleError::NotFound(format!("no approval {id}"))
            }
            crate::approval::BrokerError::Invalid(m) => ConsoleError::BadRequest(m),
            other => {
                tracing::error!(error = %other, "console: approvals failed");
                ConsoleError::Unavailable("the approvals cannot be read or recorded right now (is the database up?); try again".into())
            }
        }
    }
}

impl From<crate::audit::AuditError> for ConsoleError {
    fn from(e: crate::audit::AuditError) -> Self {
        match e {
            crate::audit::AuditError::InvalidQuery(m) => ConsoleError::BadRequest(m),
            other => {
                tracing::error!(error = %other, "console: audit log failed");
                ConsoleError::Unavailable(
                    "the audit log cannot be read or recorded right now; nothing is shown".into(),
                )
            }
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            ConsoleError::SignIn => {
                return (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, "/console/login")],
                )
                    .into_response();
            }
            ConsoleError::Csrf => (StatusCode::FORBIDDEN, "Refused"),
            ConsoleError::Forbidden(_) => (StatusCode::FORBIDDEN, "Not yours to see"),
            ConsoleError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Not accepted"),
            ConsoleError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            ConsoleError::Conflict(_) => (StatusCode::CONFLICT, "Already decided"),
            ConsoleError::Idp(OidcError::Unreachable { .. }) => (
                StatusCode::BAD_GATEWAY,
                "The identity provider is unavailable",
            ),
            ConsoleError::Idp(_) => (StatusCode::FORBIDDEN, "Sign-in failed"),
            ConsoleError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        };
        let body = format!(
            "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/console/\">Back to the console</a></p>",
            esc(&capitalized(&self.to_string()))
        );
        super::html_response(status, page(title, None, &body))
    }
}

/// The message with its first letter in upper case, as a sentence on a page.
fn capitalized(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
