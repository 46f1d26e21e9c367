//! Signing in and out: the sign-in page, the OpenID Connect round trip and the token fallback.
//!
//! Before sign-in a browser holds a login cookie (random, HttpOnly, `SameSite=Lax` so it comes
//! back with the provider's redirect): the token form must echo it (a login CSRF check), and
//! an OpenID Connect sign-in started in one browser can only finish in the same one.

use super::error::ConsoleError;
use super::html::{esc, page};
use super::session::{Identity, cookie, cookie_name, random_token};
use super::{Console, html_response};
use axum::Form;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Longest token, code or state accepted.
const MAX_FIELD: usize = 4096;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/login", get(login_page))
        .route("/console/login/oidc", get(oidc_start))
        .route("/console/callback", get(oidc_callback))
        .route("/console/login/token", post(token_login))
        .route("/console/logout", post(logout))
}

/// `/console/`: the inbox for approvers, the audit pages for auditors, else the sign-in page.
pub(super) async fn index(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let to = match console.sessions.current(&headers) {
        None => "/console/login",
        Some(s) if s.identity.approver.is_some() => "/console/inbox",
        Some(s) if s.identity.auditor.is_some() => "/console/audit",
        Some(_) => "/console/inbox",
    };
    redirect(to)
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

impl Console {
    fn login_cookie_name(&self) -> String {
        cookie_name("countersign-login", self.sessions.secure)
    }

    /// `Set-Cookie` for the login cookie (`SameSite=Lax`: it must come back from the provider).
    fn login_cookie(&self, value: &str, max_age: u32) -> HeaderValue {
        let secure = if self.sessions.secure { "; Secure" } else { "" };
        let value = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
            self.login_cookie_name()
        );
        HeaderValue::from_str(&value).expect("cookie is ASCII")
    }
}

async fn login_page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let browser = cookie(&headers, &console.login_cookie_name())
        .filter(|v| v.len() == 43)
        .unwrap_or_else(random_token);
    let mut body = String::new();
    if let Some(oidc) = &console.oidc {
        body.push_str(&format!(
            "<section aria-labelledby=\"sso\"><h2 id=\"sso\">Single sign-on</h2>\
             <p><a class=\"button\" href=\"/console/login/oidc\">Sign in with your organisation's account</a></p>\
             <p class=\"hint\">Identity provider: {}</p></section>",
            esc(oidc.issuer())
        ));
    }
    if console.tokens.is_some() {
        body.push_str(&format!(
            "<section aria-labelledby=\"fallback\"><h2 id=\"fallback\">Sign in with an API token (fallback)</h2>\
             <p class=\"hint\">For sites without an identity provider: the approver's or auditor's \
             existing token, as used with the CLI and the HTTP APIs.</p>\
             <form method=\"post\" action=\"/console/login/token\">\
             <input type=\"hidden\" name=\"login\" value=\"{browser}\">\
             <label for=\"token\">Approver or auditor token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required maxlength=\"{MAX_FIELD}\">\
             <button type=\"submit\">Sign in with token</button></form></section>"
        ));
    }
    if body.is_empty() {
        body.push_str(
            "<p>No way to sign in is configured (console.oidc, console.token_sign_in).</p>",
        );
    }
    let mut response = html_response(StatusCode::OK, page("Sign in", None, &body));
    response
        .headers_mut()
        .append(header::SET_COOKIE, console.login_cookie(&browser, 600));
    response
}

async fn oidc_start(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let Some(oidc) = &console.oidc else {
        return Err(ConsoleError::NotFound(
            "single sign-on is not configured".into(),
        ));
    };
    let browser = cookie(&headers, &console.login_cookie_name())
        .filter(|v| v.len() == 43)
        .unwrap_or_else(random_token);
    let url = oidc.start(&browser).await?;
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, console.login_cookie(&browser, 600));
    Ok(response)
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn oidc_callback(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(back): Query<Callback>,
) -> Result<Response, ConsoleError> {
    let Some(oidc) = &console.oidc else {
        return Err(ConsoleError::NotFound(
            "single sign-on is not configured".into(),
        ));
    };
    if let Some(error) = &back.error {
        let detail = back.error_description.as_deref().unwrap_or("");
        return Err(
            super::oidc::OidcError::Refused(format!("{error} {detail}").trim().to_owned()).into(),
        );
    }
    if back
        .iss
        .as_deref()
        .is_some_and(|iss| iss.trim_end_matches('/') != oidc.issuer().trim_end_matches('/'))
    {
        return Err(
            super::oidc::OidcError::Refused("the answer came from another issuer".into()).into(),
        );
    }
    let (Some(code), Some(state)) = (&back.code, &back.state) else {
        return Err(ConsoleError::BadRequest(
            "the provider's answer has no code or state".into(),
        ));
    };
    if code.len() > MAX_FIELD || state.len() > MAX_FIELD {
        return Err(ConsoleError::BadRequest(
            "the provider's answer is too long".into(),
        ));
    }
    let browser = cookie(&headers, &console.login_cookie_name()).unwrap_or_default();
    let claims = oidc.finish(state, code, &browser).await?;
    let identity =
        super::identity::from_claims(&console.people, console.broker.directory(), &claims);
    tracing::info!(issuer = %claims.issuer, subject = %claims.subject, approver = ?identity.approver, stands_for = ?identity.stands_for, auditor = ?identity.auditor, "console sign-in");
    Ok(signed_in(&console, identity))
}

/// Starts the session. The page moves on by itself: a `SameSite=Strict` cookie set at the end
/// of the provider's cross-site redirect is sent from the next, same-site navigation.
fn signed_in(console: &Console, identity: Identity) -> Response {
    let cookie = console.sessions.start(identity);
    let body = "<meta http-equiv=\"refresh\" content=\"0;url=/console/\">\
                <p>Signed in. <a href=\"/console/\">Continue to the console</a>.</p>";
    let mut response = html_response(StatusCode::OK, page("Signed in", None, body));
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, console.sessions.set_cookie(&cookie));
    h.append(header::SET_COOKIE, console.login_cookie("", 0));
    response
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    token: String,
}

async fn token_login(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, ConsoleError> {
    let Some(tokens) = &console.tokens else {
        return Err(ConsoleError::NotFound("token sign-in is turned off".into()));
    };
    let browser = cookie(&headers, &console.login_cookie_name()).unwrap_or_default();
    let echoed = !browser.is_empty() && bool::from(browser.as_bytes().ct_eq(form.login.as_bytes()));
    if !echoed {
        return Err(ConsoleError::Csrf);
    }
    if form.token.len() > MAX_FIELD {
        return Err(ConsoleError::BadRequest("that token is too long".into()));
    }
    match tokens.identify(console.broker.directory(), &form.token) {
        Some(identity) => Ok(signed_in(&console, identity)),
        None => {
            crate::telemetry::refused_credential("console token", "/console/login/token");
            Err(ConsoleError::Forbidden(
                "that token is not an approver's or an auditor's".into(),
            ))
        }
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    let current = console.session(&headers)?;
    if !current.csrf_matches(&form.csrf) {
        return Err(ConsoleError::Csrf);
    }
    console.sessions.end(&current);
    let mut response = html_response(
        StatusCode::OK,
        page(
            "Signed out",
            None,
            "<p>You are signed out. <a href=\"/console/login\">Sign in again</a>.</p>",
        ),
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, console.sessions.clear_cookie());
    Ok(response)
}
