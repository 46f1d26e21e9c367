//! Who an approver is in Mattermost: a user id, the one thing the server vouches for (it signs
//! it into a click's `trigger_id`, and asserts it in the bot's websocket events). A callback
//! body's `user_name` is not signed, and usernames can be changed by their owners, so neither
//! ever chooses the person.
//!
//! `approvers[].chat.mattermost` may name a user id or a username. Each is resolved once to a
//! user id through the API: an id-shaped value (26 lowercase letters and digits) is looked up as
//! an id first (`GET /users/{id}`), so nobody can take over an approver by registering a
//! username that spells the approver's id; the rest by `POST /users/usernames`. Resolution runs
//! at start-up (retried until the server answers), and again for names still unresolved when a
//! user the gateway does not know clicks or reacts: at once when the last try could not reach
//! the server, else at most every [`RETRY_EVERY`]. A binding, once made, stays for the life of
//! the process: when a bound user renames themselves they stay the approver, and whoever takes
//! the old name does not become one. A restart resolves usernames afresh; configure user ids to
//! pin approvers across restarts.

use super::api::Api;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Unresolved names are looked up again at most this often.
pub const RETRY_EVERY: Duration = Duration::from_secs(10);

/// An approver's Mattermost account, as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub approver: String,
    /// The account's username when it was resolved (for display and evidence).
    pub username: String,
}

/// The configured accounts, and the user ids they resolved to.
pub struct People {
    /// (approver id, configured account), in configuration order.
    configured: Vec<(String, String)>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_user_id: HashMap<String, Binding>,
    /// Approvers whose account has not been found (yet).
    unresolved: Vec<(String, String)>,
    last_attempt: Option<Instant>,
    attempted: bool,
    /// The last pass could not ask the server (it was down or refused).
    failed: bool,
}

/// Mattermost's ids: 26 characters, lowercase letters and digits.
fn looks_like_an_id(account: &str) -> bool {
    account.len() == 26
        && account
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl People {
    pub fn new(configured: Vec<(String, String)>) -> Self {
        People {
            state: Mutex::new(State {
                unresolved: configured.clone(),
                ..State::default()
            }),
            configured,
        }
    }

    /// The approver behind `user_id`. An unknown user triggers a new lookup of the names still
    /// unresolved (rate-limited), so an approver whose account was created after start-up is
    /// found.
    pub async fn approver(&self, api: &Api, user_id: &str) -> Option<Binding> {
        let mut state = self.state.lock().await;
        if let Some(binding) = state.by_user_id.get(user_id) {
            return Some(binding.clone());
        }
        let due = state
            .last_attempt
            .is_none_or(|at| at.elapsed() >= RETRY_EVERY);
        if !state.unresolved.is_empty() && (!state.attempted || state.failed || due) {
            resolve(&mut state, api).await;
        }
        state.by_user_id.get(user_id).cloned()
    }

    /// Resolves every configured account not resolved yet (at start-up). False when the
    /// server could not be asked (the caller tries again later); names no user has are logged.
    pub async fn resolve_all(&self, api: &Api) -> bool {
        let mut state = self.state.lock().await;
        if !state.unresolved.is_empty() {
            resolve(&mut state, api).await;
        }
        !state.failed
    }

    /// The account as configured, for display when it is not resolved.
    pub fn configured(&self, approver: &str) -> Option<&str> {
        self.configured
            .iter()
            .find(|(who, _)| who == approver)
            .map(|(_, account)| account.as_str())
    }
}

/// One pass over the unresolved accounts: ids first, then usernames in one request.
async fn resolve(state: &mut State, api: &Api) {
    state.attempted = true;
    state.failed = false;
    state.last_attempt = Some(Instant::now());
    let mut names = Vec::new();
    for (approver, account) in std::mem::take(&mut state.unresolved) {
        if looks_like_an_id(&account) {
            match api.user(&account).await {
                Ok(user) => {
                    bind(state, &approver, &account, &user);
                    continue;
                }
                Err(e) if e.status() == Some(404) => {}
                Err(e) => {
                    tracing::warn!(approver, account, error = %e, "mattermost: cannot look up an approver's user id");
                    state.failed = true;
                    state.unresolved.push((approver, account));
                    continue;
                }
            }
        }
        names.push((approver, account));
    }
    if names.is_empty() {
        return;
    }
    let wanted: Vec<&str> = names.iter().map(|(_, name)| name.as_str()).collect();
    let users = match api.users_by_usernames(&wanted).await {
        Ok(users) => users,
        Err(e) => {
            tracing::warn!(error = %e, "mattermost: cannot resolve approvers' usernames; they cannot vote from Mattermost until this works");
            state.failed = true;
            state.unresolved.extend(names);
            return;
        }
    };
    for (approver, name) in names {
        match users.iter().find(|u| u["username"] == name.as_str()) {
            Some(user) => {
                let id = user["id"].as_str().unwrap_or_default().to_owned();
                bind(state, &approver, &id, user);
            }
            None => {
                tracing::warn!(
                    approver,
                    username = name,
                    "mattermost: no user has this username; the approver cannot vote from Mattermost until one does"
                );
                state.unresolved.push((approver, name));
            }
        }
    }
}

fn bind(state: &mut State, approver: &str, user_id: &str, user: &serde_json::Value) {
    if user_id.is_empty() {
        return;
    }
    let username = user["username"].as_str().unwrap_or_default().to_owned();
    tracing::info!(
        approver,
        user_id,
        username,
        "mattermost: approver resolved to a user id"
    );
    state.by_user_id.insert(
        user_id.to_owned(),
        Binding {
            approver: approver.to_owned(),
            username,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_26_lowercase_letters_and_digits_look_like_an_id() {
        assert!(looks_like_an_id("dave0000000000000000000000"));
        assert!(!looks_like_an_id("dave"));
        assert!(!looks_like_an_id("Dave0000000000000000000000"));
        assert!(!looks_like_an_id("dave.000000000000000000000"));
    }
}
