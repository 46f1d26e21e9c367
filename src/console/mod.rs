//! The web console for approvers and auditors, served by the gateway itself at `/console`.
//!
//! Server-rendered HTML (escaped strings, [`html`]) plus one small script for the live inbox
//! and the countdowns, both compiled into the binary: no CDN, no external fonts, no Node at
//! run time. Sign-in is OpenID Connect ([`oidc`]) or, as a fallback for sites without an
//! identity provider, an approver's or auditor's existing API token. Sessions live on the
//! server ([`session`]); every form carries the session's CSRF token; every response carries a
//! strict Content-Security-Policy; the listener's Host/Origin guard covers these routes too.
//!
//! ```text
//! GET  /console/login            sign-in page        GET  /console/inbox           approver inbox
//! GET  /console/login/oidc       to the provider     GET  /console/inbox/list      its list (live)
//! GET  /console/callback         back from it        GET  /console/events          SSE: "changed"
//! POST /console/login/token      fallback sign-in    GET  /console/approvals/{id}  one request
//! POST /console/logout                               POST /console/approvals/{id}/vote
//! GET  /console/audit            auditor search      GET  /console/audit/calls/{id}  a timeline
//! GET  /console/audit/export?format=csv|jsonl&…   GET|POST /console/audit/verify
//! GET  /console/insights?since=7d
//! ```

mod chain;

mod decide;
mod error;
mod export;
mod history;
mod html;
mod identity;
mod inbox;
mod insights;
mod oidc;
mod session;
mod signin;
mod story;

pub use crate::config::console::{self as config, ConsoleConfig};

use crate::approval::Broker;
use crate::audit::AuditLog;
use crate::policy::Policies;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use error::ConsoleError;
use session::{Current, Sessions};
use std::sync::Arc;
use std::time::Duration;

/// Everything the console's handlers share.
pub struct Console {
    broker: Arc<Broker>,
    audit: AuditLog,
    policies: Policies,
    sessions: Sessions,
    oidc: Option<oidc::Oidc>,
    /// The token fallback, when it is on.
    tokens: Option<identity::Tokens>,
    people: Vec<config::PersonMapping>,
    /// The last verify run from the console, and the lock that runs one at a time.
    last_verify: std::sync::Mutex<Option<chain::LastVerify>>,
    verifying: std::sync::Mutex<Option<chain::Running>>,
    /// The sequence number of the last event this process committed or verified.
    head: tokio::sync::watch::Sender<i64>,
}

/// Tells live inboxes that the audit log moved.
struct HeadWatch(tokio::sync::watch::Sender<i64>);

impl crate::audit::Observer for HeadWatch {
    fn observe(&self, event: &crate::audit::Recorded<'_>) {
        self.0.send_replace(event.seq);
    }
}

impl Console {
    /// The console as configured; `None` when it is turned off.
    pub async fn new(
        config: &crate::config::Config,
        broker: Arc<Broker>,
        audit: AuditLog,
        policies: Policies,
    ) -> anyhow::Result<Option<Arc<Console>>> {
        let c = &config.console;
        if !c.enabled {
            return Ok(None);
        }
        let base = c
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.server.listen));
        let base = base.trim_end_matches('/').to_owned();
        let secure = base.starts_with("https://");
        let oidc = match &c.oidc {
            Some(o) => Some(oidc_client(config, o, &base)?),
            None => None,
        };
        let tokens = c
            .token_sign_in()
            .then(|| identity::Tokens::new(&config.auditors));
        let head = tokio::sync::watch::Sender::new(0);
        audit
            .attach(Arc::new(HeadWatch(head.clone())), None)
            .await?;
        Ok(Some(Arc::new(Console {
            broker,
            audit,
            policies,
            sessions: Sessions::new(
                Duration::from_secs(c.session_idle_secs),
                Duration::from_secs(c.session_max_secs),
                secure,
            ),
            oidc,
            tokens,
            people: c
                .oidc
                .as_ref()
                .map(|o| o.people.clone())
                .unwrap_or_default(),
            last_verify: Default::default(),
            verifying: Default::default(),
            head,
        })))
    }

    /// The request's live session, or [`ConsoleError::SignIn`].
    fn session(&self, headers: &axum::http::HeaderMap) -> Result<Current, ConsoleError> {
        self.sessions.current(headers).ok_or(ConsoleError::SignIn)
    }
}

/// The OpenID Connect client, with its own HTTP client: the gateway's TLS settings, no
/// redirects followed, no pooled connections (a few requests per sign-in; a connection the
/// provider closed meanwhile would fail a POST that is not retried), 10 s per request.
fn oidc_client(
    config: &crate::config::Config,
    oidc: &config::OidcConfig,
    base: &str,
) -> anyhow::Result<oidc::Oidc> {
    let http = config
        .tls
        .setup()?
        .http()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()?;
    oidc::Oidc::new(oidc.clone(), &format!("{base}/console/callback"), http)
}

/// The console's routes, every response with the security headers.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(signin::index))
        .route("/console/", get(signin::index))
        .route("/console/static/console.js", get(script))
        .route("/console/static/console.css", get(style))
        .merge(signin::routes())
        .merge(inbox::routes())
        .merge(decide::routes())
        .merge(history::routes())
        .merge(chain::routes())
        .merge(insights::routes())
        .route("/console/{*rest}", get(not_found).post(not_found))
        .with_state(console)
        .layer(axum::middleware::from_fn(security_headers))
}

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn not_found() -> ConsoleError {
    ConsoleError::NotFound("there is no such page in the console".into())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An HTML page with `status`.
pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Scripts and styles only from the console itself, no framing, no caching of
/// pages (static assets revalidate). The referrer stays on the site (`same-origin`: with
/// `no-referrer` a browser sends `Origin: null` on form posts, which the Host/Origin guard refuses).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in set {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
