//! Agent authentication: API keys, stored as SHA-256 hashes, presented as bearer tokens.

use crate::config::AgentConfig;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Who is calling. Travels with every request through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: Arc<str>,
    /// The human the agent acts for, when configured.
    pub on_behalf_of: Option<Arc<str>>,
    pub groups: Arc<[String]>,
}

impl Agent {
    /// The identity used when anonymous access is allowed.
    pub fn anonymous() -> Self {
        Agent {
            id: "anonymous".into(),
            on_behalf_of: None,
            groups: Arc::new([]),
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is required (Authorization: Bearer <key>)")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
}

/// The configured agents, keyed by the SHA-256 of their API key.
#[derive(Debug, Clone)]
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Agent>,
    allow_anonymous: bool,
}

impl Authenticator {
    pub fn new(agents: &[AgentConfig], allow_anonymous: bool) -> Self {
        let by_hash = agents
            .iter()
            .filter_map(|a| {
                let hash = decode_hex32(&a.key_sha256)?;
                let agent = Agent {
                    id: a.id.as_str().into(),
                    on_behalf_of: a.on_behalf_of.as_deref().map(Into::into),
                    groups: a.groups.clone().into(),
                };
                Some((hash, agent))
            })
            .collect();
        Authenticator {
            by_hash,
            allow_anonymous,
        }
    }

    /// Authenticates an `Authorization` header value (or its absence).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Agent, AuthError> {
        let Some(header) = authorization else {
            return if self.allow_anonymous {
                Ok(Agent::anonymous())
            } else {
                Err(AuthError::Missing)
            };
        };
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Invalid)?;
        self.authenticate_key(key.trim())
    }

    /// Authenticates a raw API key.
    pub fn authenticate_key(&self, key: &str) -> Result<Agent, AuthError> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // The map lookup is on a hash of the secret, so its timing reveals nothing useful;
        // the constant-time compare guards the final match anyway.
        self.by_hash
            .iter()
            .find(|(stored, _)| bool::from(stored.ct_eq(&hash)))
            .map(|(_, agent)| agent.clone())
            .ok_or(AuthError::Invalid)
    }
}

/// Hex SHA-256 of an API key, as stored in `agents[].key_sha256`.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(anonymous: bool) -> Authenticator {
        let agent = AgentConfig {
            id: "ci-bot".into(),
            on_behalf_of: Some("alice".into()),
            groups: vec!["builders".into()],
            key_sha256: hash_key("s3cret"),
        };
        Authenticator::new(&[agent], anonymous)
    }

    #[test]
    fn a_valid_key_yields_the_configured_agent() {
        let agent = auth(false).authenticate(Some("Bearer s3cret")).unwrap();
        assert_eq!(&*agent.id, "ci-bot");
        assert_eq!(agent.on_behalf_of.as_deref(), Some("alice"));
    }

    #[test]
    fn a_wrong_or_missing_key_is_refused() {
        assert_eq!(
            auth(false).authenticate(Some("Bearer nope")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth(false).authenticate(Some("Basic s3cret")),
            Err(AuthError::Invalid)
        );
        assert_eq!(auth(false).authenticate(None), Err(AuthError::Missing));
    }

    #[test]
    fn anonymous_access_applies_only_without_a_header() {
        assert_eq!(&*auth(true).authenticate(None).unwrap().id, "anonymous");
        assert_eq!(
            auth(true).authenticate(Some("Bearer nope")),
            Err(AuthError::Invalid)
        );
    }
}
