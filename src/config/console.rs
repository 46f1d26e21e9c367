//! The `console:` section of the configuration.

use serde::Deserialize;
use std::collections::BTreeMap;

/// How the voter id of someone who votes only through an identity provider's group begins
/// (the rest is derived from their issuer and subject); no configured approver id may.
pub const IDP_VOTER_PREFIX: &str = "idp:";

/// The web console for approvers and auditors (served at `/console` when a `policy_dir` is
/// set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console. Default: true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The URL people open, without a path (`https://countersign.example.org`): the OpenID
    /// Connect redirect URI is built from it, and `https` makes the cookies `Secure`.
    /// Default: `http://` and `server.listen`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// A session ends after this many seconds without a request. Default: 900.
    #[serde(default = "default_idle")]
    pub session_idle_secs: u64,
    /// A session ends this many seconds after sign-in, however busy. Default: 28800 (8 h).
    #[serde(default = "default_max")]
    pub session_max_secs: u64,
    /// Sign in with an approver's or auditor's API token: the fallback for sites without an
    /// identity provider. Default: on without `oidc`, off with it.
    #[serde(default)]
    pub token_sign_in: Option<bool>,
    /// Sign-in through the organisation's OpenID Connect identity provider.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

fn yes() -> bool {
    true
}

fn default_idle() -> u64 {
    900
}

fn default_max() -> u64 {
    8 * 3600
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            public_url: None,
            session_idle_secs: default_idle(),
            session_max_secs: default_max(),
            token_sign_in: None,
            oidc: None,
        }
    }
}

/// The identity provider and who its people are here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; discovery (`/.well-known/openid-configuration`) and its JWKS are
    /// fetched from it when someone signs in.
    pub issuer: String,
    pub client_id: String,
    /// Also `COUNTERSIGN_CONSOLE__OIDC__CLIENT_SECRET`.
    pub client_secret: String,
    /// Scopes asked for besides `openid`. Default: `email`, `profile`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim that lists the person's groups. Default: `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Who is who: each entry matches signed-in people by `subject`, verified `email` or
    /// `group` (exactly one), and makes them that `approver` and/or `auditor`.
    #[serde(default)]
    pub people: Vec<PersonMapping>,
    /// The provider's groups (as `groups_claim` names them) that stand for approver groups:
    /// `{idp-group: approver-group}`. A member signed in to the console may vote wherever a
    /// rule names that approver group in `approver_groups`, without being in `approvers`.
    #[serde(default)]
    pub approver_groups: BTreeMap<String, String>,
}

fn default_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// One mapping from the identity provider's people to configured approvers and auditors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonMapping {
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// An id from `approvers`.
    #[serde(default)]
    pub approver: Option<String>,
    /// An id from `auditors`.
    #[serde(default)]
    pub auditor: Option<String>,
}

impl ConsoleConfig {
    /// Token sign-in is on when configured so, else when there is no identity provider.
    pub fn token_sign_in(&self) -> bool {
        self.token_sign_in.unwrap_or(self.oidc.is_none())
    }

    /// What the types cannot express: (field under `console`, problem).
    pub fn check(&self, approvers: &[&str], auditors: &[&str]) -> Result<(), (String, String)> {
        if self.session_idle_secs == 0 || self.session_max_secs < self.session_idle_secs {
            return Err((
                "session_max_secs".into(),
                "sessions need session_idle_secs > 0 and session_max_secs >= session_idle_secs"
                    .into(),
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err((
                "public_url".into(),
                "must start with http:// or https://".into(),
            ));
        }
        let Some(oidc) = &self.oidc else {
            return Ok(());
        };
        if oidc.client_secret.trim().is_empty() {
            return Err(("oidc.client_secret".into(), "must not be empty".into()));
        }
        for (i, p) in oidc.people.iter().enumerate() {
            p.check(approvers, auditors)
                .map_err(|m| (format!("oidc.people[{i}]"), m))?;
        }
        for (idp_group, group) in &oidc.approver_groups {
            let field = format!("oidc.approver_groups.{idp_group}");
            if idp_group.trim().is_empty() || idp_group.trim() != idp_group {
                return Err((
                    field,
                    "an identity provider's group name must not be empty or padded".into(),
                ));
            }
            if group.trim().is_empty() || group.trim() != group {
                return Err((field, "name the approver group it stands for".into()));
            }
        }
        if !oidc.approver_groups.is_empty() && !self.enabled {
            return Err((
                "oidc.approver_groups".into(),
                "groups stand for approver groups only through the console's sign-in: enable the console".into(),
            ));
        }
        Ok(())
    }
}

impl PersonMapping {
    fn check(&self, approvers: &[&str], auditors: &[&str]) -> Result<(), String> {
        let keys = [&self.subject, &self.email, &self.group];
        if keys.iter().filter(|k| k.is_some()).count() != 1 {
            return Err("give exactly one of subject, email and group".into());
        }
        if self.approver.is_none() && self.auditor.is_none() {
            return Err("name an approver, an auditor or both".into());
        }
        if let Some(a) = &self.approver
            && !approvers.contains(&a.as_str())
        {
            return Err(format!("approver `{a}` is not in approvers"));
        }
        if let Some(a) = &self.auditor
            && !auditors.contains(&a.as_str())
        {
            return Err(format!("auditor `{a}` is not in auditors"));
        }
        Ok(())
    }
}
