//! The `console:` section of the configuration.

use super::Invalid;
use secrecy::{ExposeSecret as _, SecretString};
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
    /// Also `COUNTERSIGN_CONSOLE__OIDC__CLIENT_SECRET`. Secret: kept out of `Debug` output.
    pub client_secret: SecretString,
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

    /// What the types cannot express; the field is named under `console`.
    pub fn check(&self, approvers: &[&str], auditors: &[&str]) -> Result<(), Invalid> {
        self.check_sessions()?;
        let Some(oidc) = &self.oidc else {
            return Ok(());
        };
        oidc.check(approvers, auditors)?;
        if !oidc.approver_groups.is_empty() && !self.enabled {
            return Err(Invalid::new(
                "oidc.approver_groups",
                "groups stand for approver groups only through the console's sign-in: enable the console",
            ));
        }
        Ok(())
    }

    /// Session lifetimes that make sense, and a public URL with a scheme.
    fn check_sessions(&self) -> Result<(), Invalid> {
        if self.session_idle_secs == 0 || self.session_max_secs < self.session_idle_secs {
            return Err(Invalid::new(
                "session_max_secs",
                "sessions need session_idle_secs > 0 and session_max_secs >= session_idle_secs",
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Invalid::new(
                "public_url",
                "must start with http:// or https://",
            ));
        }
        Ok(())
    }
}

impl OidcConfig {
    /// A client secret, people who name configured approvers and auditors, and group names
    /// that are neither empty nor padded. The field is named under `console`.
    fn check(&self, approvers: &[&str], auditors: &[&str]) -> Result<(), Invalid> {
        if self.client_secret.expose_secret().trim().is_empty() {
            return Err(Invalid::new("oidc.client_secret", "must not be empty"));
        }
        for (i, p) in self.people.iter().enumerate() {
            p.check(approvers, auditors)
                .map_err(|e| Invalid::new(format!("oidc.people[{i}]"), e.to_string()))?;
        }
        for (idp_group, group) in &self.approver_groups {
            let field = format!("oidc.approver_groups.{idp_group}");
            if idp_group.trim().is_empty() || idp_group.trim() != idp_group {
                return Err(Invalid::new(
                    field,
                    "an identity provider's group name must not be empty or padded",
                ));
            }
            if group.trim().is_empty() || group.trim() != group {
                return Err(Invalid::new(field, "name the approver group it stands for"));
            }
        }
        Ok(())
    }
}

/// Why a `console.oidc.people` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("give exactly one of subject, email and group")]
    NotOneKey,
    #[error("name an approver, an auditor or both")]
    NoRole,
    #[error("approver `{0}` is not in approvers")]
    UnknownApprover(String),
    #[error("auditor `{0}` is not in auditors")]
    UnknownAuditor(String),
}

impl PersonMapping {
    fn check(&self, approvers: &[&str], auditors: &[&str]) -> Result<(), MappingError> {
        let keys = [&self.subject, &self.email, &self.group];
        if keys.iter().filter(|k| k.is_some()).count() != 1 {
            return Err(MappingError::NotOneKey);
        }
        if self.approver.is_none() && self.auditor.is_none() {
            return Err(MappingError::NoRole);
        }
        if let Some(a) = &self.approver
            && !approvers.contains(&a.as_str())
        {
            return Err(MappingError::UnknownApprover(a.clone()));
        }
        if let Some(a) = &self.auditor
            && !auditors.contains(&a.as_str())
        {
            return Err(MappingError::UnknownAuditor(a.clone()));
        }
        Ok(())
    }
}
