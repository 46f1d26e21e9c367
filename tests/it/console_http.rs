//! The console's refusals over plain HTTP, with the token fallback (no browser needed): login
//! CSRF, votes without or with a forged CSRF token, requests that are not the voter's, a
//! tampered session cookie, sign-out, and the security headers. Nothing refused is decided.

use crate::app::{Client, TestApp};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};

/// A client that follows no redirect and keeps no cookies (the test sends them).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A form post's body (`application/x-www-form-urlencoded`).
trait FormBody {
    fn form_body<T: serde::Serialize + ?Sized>(self, form: &T) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body<T: serde::Serialize + ?Sized>(self, form: &T) -> Self {
        self.header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(serde_urlencoded::to_string(form).unwrap())
    }
}

/// `name=value` of the first `Set-Cookie` named `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The value of the hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

/// Posts the token form with `form`, and the login cookie when given.
async fn post_login(
    app: &Client,
    form: &[(&str, &str)],
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/console/login/token", app.base))
        .form_body(form);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

/// Signs in with `who`'s API token; returns the session cookie (`name=value`). On the way: the
/// page's CSP, and the token form refused without its CSRF echo, from another browser, or with
/// an unknown token.
async fn sign_in(app: &Client, who: &str) -> String {
    let login = client()
        .get(format!("{}/console/login", app.base))
        .send()
        .await
        .unwrap();
    let csp = login.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let cookie = set_cookie(&login, "countersign-login").expect("a login cookie");
    let value = hidden(&login.text().await.unwrap(), "login");
    let token = crate::app::token(who);
    for (form, cookie, why) in [
        (
            vec![("token", token.as_str())],
            Some(cookie.as_str()),
            "without its CSRF echo",
        ),
        (
            vec![("login", value.as_str()), ("token", token.as_str())],
            None,
            "from another browser",
        ),
        (
            vec![("login", value.as_str()), ("token", "nobody-token")],
            Some(cookie.as_str()),
            "with an unknown token",
        ),
    ] {
        let refused = post_login(app, &form, cookie).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "a sign-in {why}");
    }
    let ok = post_login(app, &[("login", &value), ("token", &token)], Some(&cookie)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let raw = ok
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" | ");
    assert!(
        raw.contains("HttpOnly") && raw.contains("SameSite=Strict"),
        "{raw}"
    );
    set_cookie(&ok, "countersign-session").expect("a session cookie")
}

async fn get(app: &Client, path: &str, cookie: &str) -> (StatusCode, String, Option<String>) {
    let response = client()
        .get(format!("{}{path}", app.base))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().unwrap().to_owned());
    (response.status(), response.text().await.unwrap(), location)
}

async fn vote(app: &Client, id: &str, cookie: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
    let response = client()
        .post(format!("{}/console/approvals/{id}/vote", app.base))
        .header(COOKIE, cookie)
        .form_body(form)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_forged_and_foreign_requests_and_decides_nothing() {
    let app = TestApp::builder().spawn().await;
    // delete_record: group ops, quorum 2; the agent acts for alice, so she may not decide it.
    let (held, id) = app.held_delete("rec-9").await;
    let bob = sign_in(&app, "bob").await;
    let (status, page, _) = get(&app, &format!("/console/approvals/{id}"), &bob).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let csrf = hidden(&page, "csrf");
    forged_votes_are_refused(&app, &id, &bob, &csrf).await;
    for who in ["alice", "dave"] {
        not_theirs(&app, &id, who).await;
    }
    let mut tampered = bob.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _, location) = get(&app, "/console/inbox", &tampered).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/console/login"))
    );
    let (_, votes) = app.get("/audit/events?kind=approval.vote", "audrey").await;
    assert_eq!(
        votes.as_array().map(Vec::len),
        Some(0),
        "a refused request reached the ballot box: {votes}"
    );
    let (status, said) = vote(
        &app,
        &id,
        &bob,
        &[
            ("decision", "deny"),
            ("csrf", &csrf),
            ("reason", "not today"),
        ],
    )
    .await;
    assert!(
        status == StatusCode::OK && said.contains("denied"),
        "{said}"
    );
    let reply = held.answer().await;
    assert!(reply.text().contains("not today"), "{reply}");
    signing_out_ends_the_session(&app, &bob, &csrf).await;
}

/// Without the CSRF token, with a forged one, or a deny without a reason: refused.
async fn forged_votes_are_refused(app: &Client, id: &str, cookie: &str, csrf: &str) {
    for form in [
        vec![("decision", "approve")],
        vec![("decision", "approve"), ("csrf", "forged")],
    ] {
        let (status, _) = vote(app, id, cookie, &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form:?}");
    }
    let (status, _) = vote(app, id, cookie, &[("decision", "deny"), ("csrf", csrf)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a deny without a reason");
}

/// `who` may not decide request `id`: it is not in their inbox, its page is 403, a vote is 403.
async fn not_theirs(app: &Client, id: &str, who: &str) {
    let cookie = sign_in(app, who).await;
    let (status, _, _) = get(app, &format!("/console/approvals/{id}"), &cookie).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{who} opened it");
    let (_, list, _) = get(app, "/console/inbox/list", &cookie).await;
    assert!(!list.contains(id), "{who} sees it: {list}");
    let (_, mine, _) = get(app, "/console/inbox", &cookie).await;
    let csrf = hidden(&mine, "csrf");
    let (status, _) = vote(
        app,
        id,
        &cookie,
        &[("decision", "approve"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{who} voted");
}

/// Sign-out (with the CSRF token) ends the session.
async fn signing_out_ends_the_session(app: &Client, cookie: &str, csrf: &str) {
    let sign_out = client()
        .post(format!("{}/console/logout", app.base))
        .header(COOKIE, cookie)
        .form_body(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(sign_out.status(), StatusCode::OK);
    let (status, _, _) = get(app, "/console/inbox", cookie).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the session outlived sign-out"
    );
}
