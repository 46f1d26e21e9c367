//! Console sessions: kept on the server, named by a random cookie, each with its own CSRF
//! token, an idle and an absolute timeout. A cookie that names no live session (forged,
//! tampered with, expired, signed out) is simply unknown.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Most sessions kept at once; the oldest goes first past it.
const MAX_SESSIONS: usize = 10_000;

/// Who is signed in, and as what.
#[derive(Debug, Clone)]
pub struct Identity {
    /// How the header names them (an email, a subject or an approver id).
    pub name: String,
    /// The id their votes are cast under: the configured approver they are, else (when one of
    /// their identity provider's groups stands for an approver group) one derived from their
    /// issuer and subject.
    pub approver: Option<String>,
    /// The configured auditor they are, if any.
    pub auditor: Option<String>,
    /// How they signed in (`method`, `issuer`, `subject`, …), kept with every vote they cast.
    pub authenticated: Value,
    /// Who the identity provider says they are, with their groups that stand for approver
    /// groups: given to every ballot they cast (none for a token sign-in).
    pub idp: Option<crate::audit::events::IdpVoter>,
    /// The approver groups those groups stand for.
    pub stands_for: Vec<String>,
}

struct Session {
    identity: Arc<Identity>,
    csrf: String,
    started: Instant,
    last: Instant,
    /// Approvals already recorded as seen in this session.
    seen: HashSet<Uuid>,
}

/// The session a request belongs to.
#[derive(Debug, Clone)]
pub struct Current {
    pub identity: Arc<Identity>,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    key: [u8; 32],
}

/// Every live session, by the SHA-256 of its cookie value.
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    max: Duration,
    /// `Secure` cookies with the `__Host-` prefix (the console is served over TLS).
    pub secure: bool,
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration, secure: bool) -> Self {
        Sessions {
            live: Mutex::default(),
            idle,
            max,
            secure,
        }
    }

    /// Starts a session; returns the cookie value that names it.
    pub fn start(&self, identity: Identity) -> String {
        let cookie = random_token();
        let now = Instant::now();
        let session = Session {
            identity: Arc::new(identity),
            csrf: random_token(),
            started: now,
            last: now,
            seen: HashSet::new(),
        };
        let mut live = self.live.lock().expect("sessions lock");
        live.retain(|_, s| self.alive(s, now));
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(key_of(&cookie), session);
        cookie
    }

    /// The live session named by the request's cookie, touched; `None` when there is none.
    pub fn current(&self, headers: &HeaderMap) -> Option<Current> {
        self.current_at(headers, Instant::now())
    }

    fn current_at(&self, headers: &HeaderMap, now: Instant) -> Option<Current> {
        let cookie = cookie(headers, &self.cookie_name())?;
        let key = key_of(&cookie);
        let mut live = self.live.lock().expect("sessions lock");
        let session = live.get_mut(&key)?;
        if !self.alive(session, now) {
            live.remove(&key);
            return None;
        }
        session.last = now;
        Some(Current {
            identity: session.identity.clone(),
            csrf: session.csrf.clone(),
            key,
        })
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last) < self.idle && now.duration_since(s.started) < self.max
    }

    /// Whether the session is still live, without counting this as activity (a live stream
    /// asks this; only requests keep a session from going idle).
    pub fn still_live(&self, current: &Current) -> bool {
        let live = self.live.lock().expect("sessions lock");
        live.get(&current.key)
            .is_some_and(|s| self.alive(s, Instant::now()))
    }

    /// Ends the session (sign-out).
    pub fn end(&self, current: &Current) {
        self.live
            .lock()
            .expect("sessions lock")
            .remove(&current.key);
    }

    /// True the first time this session looks at `approval`.
    pub fn first_sight(&self, current: &Current, approval: Uuid) -> bool {
        let mut live = self.live.lock().expect("sessions lock");
        live.get_mut(&current.key)
            .is_some_and(|s| s.seen.insert(approval))
    }

    pub fn cookie_name(&self) -> String {
        cookie_name("countersign-session", self.secure)
    }

    /// `Set-Cookie` for a new session: HttpOnly, SameSite=Strict, `Secure` over TLS.
    pub fn set_cookie(&self, value: &str) -> HeaderValue {
        let max_age = self.max.as_secs();
        let value = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            self.cookie_name(),
            if self.secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&value).expect("cookie is ASCII")
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        let value = format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.cookie_name(),
            if self.secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&value).expect("cookie is ASCII")
    }
}

impl Current {
    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        given.len() == self.csrf.len() && bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// `__Host-NAME` over TLS (bound to this host and path `/`), plain `NAME` otherwise.
pub fn cookie_name(name: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn key_of(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            name: "alice".into(),
            approver: Some("alice".into()),
            auditor: None,
            authenticated: serde_json::json!({"method": "test"}),
            idp: None,
            stands_for: Vec::new(),
        }
    }

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    #[test]
    fn a_session_ends_when_idle_or_too_old_and_a_tampered_cookie_is_unknown() {
        let sessions = Sessions::new(Duration::from_secs(10), Duration::from_secs(30), false);
        let value = sessions.start(identity());
        let h = headers(&format!("a=b; countersign-session={value}"));
        let t0 = Instant::now();
        assert!(sessions.current_at(&h, t0).is_some());
        let mut tampered = value.clone();
        tampered.replace_range(0..1, if value.starts_with('A') { "B" } else { "A" });
        let forged = headers(&format!("countersign-session={tampered}"));
        assert!(sessions.current_at(&forged, t0).is_none());
        for s in [8, 16, 24] {
            assert!(
                sessions
                    .current_at(&h, t0 + Duration::from_secs(s))
                    .is_some()
            );
        }
        assert!(
            sessions
                .current_at(&h, t0 + Duration::from_secs(31))
                .is_none(),
            "absolute"
        );
        let value = sessions.start(identity());
        let h = headers(&format!("countersign-session={value}"));
        assert!(
            sessions
                .current_at(&h, Instant::now() + Duration::from_secs(11))
                .is_none(),
            "idle"
        );
    }

    #[test]
    fn csrf_and_cookie_attributes() {
        let sessions = Sessions::new(Duration::from_secs(10), Duration::from_secs(30), true);
        let value = sessions.start(identity());
        let cookie = sessions.set_cookie(&value);
        let cookie = cookie.to_str().unwrap();
        assert!(
            cookie.starts_with("__Host-countersign-session="),
            "{cookie}"
        );
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(attr), "{cookie}");
        }
        let h = headers(&format!("__Host-countersign-session={value}"));
        let current = sessions.current(&h).unwrap();
        assert!(current.csrf_matches(&current.csrf.clone()));
        assert!(!current.csrf_matches(""));
        assert!(!current.csrf_matches(&random_token()));
        sessions.end(&current);
        assert!(sessions.current(&h).is_none());
    }
}
