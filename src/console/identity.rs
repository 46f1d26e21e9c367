//! Who a signed-in person is here: the identity provider's claims, or an API token, mapped to
//! the configured approvers and auditors.

use super::config::PersonMapping;
use super::session::Identity;
use crate::approval::Directory;
use crate::config::AuditorConfig;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a verified ID token says about the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    /// Only when the provider says it is verified.
    pub email: Option<String>,
    pub groups: Vec<String>,
}

/// The identity of someone the provider signed in: the first mapping naming an approver and
/// the first naming an auditor that match them. Someone no mapping names gets neither.
pub fn from_claims(people: &[PersonMapping], claims: &Claims) -> Identity {
    let matching: Vec<&PersonMapping> = people.iter().filter(|p| matches(p, claims)).collect();
    let approver = matching.iter().find_map(|p| p.approver.clone());
    let auditor = matching.iter().find_map(|p| p.auditor.clone());
    Identity {
        name: claims
            .email
            .clone()
            .unwrap_or_else(|| claims.subject.clone()),
        approver,
        auditor,
        authenticated: json!({
            "method": "openid connect", "via": "console",
            "issuer": claims.issuer, "subject": claims.subject, "email": claims.email,
        }),
    }
}

fn matches(p: &PersonMapping, c: &Claims) -> bool {
    if let Some(subject) = &p.subject {
        return *subject == c.subject;
    }
    if let Some(email) = &p.email {
        return c
            .email
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(email));
    }
    if let Some(group) = &p.group {
        return c.groups.iter().any(|g| g == group);
    }
    false
}

/// The fallback sign-in: an approver's or an auditor's existing API token.
pub struct Tokens {
    /// (SHA-256 of the token, auditor id)
    auditors: Vec<([u8; 32], String)>,
}

impl Tokens {
    pub fn new(auditors: &[AuditorConfig]) -> Self {
        let auditors = auditors
            .iter()
            .filter_map(|a| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(a.token_sha256.trim(), &mut hash).ok()?;
                Some((hash, a.id.clone()))
            })
            .collect();
        Tokens { auditors }
    }

    /// The approver and/or auditor whose token this is; `None` for an unknown token.
    pub fn identify(&self, directory: &Directory, token: &str) -> Option<Identity> {
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        let approver = directory.by_token(token).map(|p| p.id.clone());
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut auditor = None;
        for (hash, id) in &self.auditors {
            if bool::from(hash.ct_eq(&presented)) {
                auditor = Some(id.clone());
            }
        }
        let name = approver.clone().or_else(|| auditor.clone())?;
        let method = match (&approver, &auditor) {
            (Some(_), _) => "approver token",
            _ => "auditor token",
        };
        Some(Identity {
            name,
            approver,
            auditor,
            authenticated: json!({"method": method, "via": "console"}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(
        key: &str,
        value: &str,
        approver: Option<&str>,
        auditor: Option<&str>,
    ) -> PersonMapping {
        let mut p = PersonMapping {
            subject: None,
            email: None,
            group: None,
            approver: approver.map(Into::into),
            auditor: auditor.map(Into::into),
        };
        match key {
            "subject" => p.subject = Some(value.into()),
            "email" => p.email = Some(value.into()),
            _ => p.group = Some(value.into()),
        }
        p
    }

    fn claims(subject: &str, email: Option<&str>, groups: &[&str]) -> Claims {
        Claims {
            issuer: "https://idp.example".into(),
            subject: subject.into(),
            email: email.map(Into::into),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn people_map_by_subject_email_or_group() {
        let people = vec![
            mapping("subject", "s-alice", Some("alice"), None),
            mapping("email", "Bob@Example.org", Some("bob"), None),
            mapping("group", "audit", None, Some("audrey")),
        ];
        let alice = from_claims(&people, &claims("s-alice", None, &[]));
        assert_eq!(alice.approver.as_deref(), Some("alice"));
        assert_eq!(alice.authenticated["subject"], "s-alice");
        let bob = from_claims(
            &people,
            &claims("s-bob", Some("bob@example.org"), &["audit"]),
        );
        assert_eq!(
            (bob.approver.as_deref(), bob.auditor.as_deref()),
            (Some("bob"), Some("audrey"))
        );
        let outsider = from_claims(&people, &claims("s-eve", Some("eve@example.org"), &["x"]));
        assert_eq!((outsider.approver, outsider.auditor), (None, None));
    }
}
