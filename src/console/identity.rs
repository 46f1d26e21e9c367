//! Who a signed-in person is here: the identity provider's claims, or an API token, mapped to
//! the configured approvers and auditors.

use super::config::{IDP_VOTER_PREFIX, PersonMapping};
use super::session::Identity;
use crate::approval::Directory;
use crate::audit::events::IdpVoter;
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
/// the first naming an auditor that match them. Someone no mapping names gets neither, unless
/// one of their groups stands for an approver group (`directory`): then they vote under an id
/// derived from their issuer and subject.
pub fn from_claims(people: &[PersonMapping], directory: &Directory, claims: &Claims) -> Identity {
    let matching: Vec<&PersonMapping> = people.iter().filter(|p| matches(p, claims)).collect();
    let auditor = matching.iter().find_map(|p| p.auditor.clone());
    let stands_for = directory.stands_for(&claims.groups);
    let mapped_groups: Vec<String> = claims
        .groups
        .iter()
        .filter(|g| !directory.stands_for(std::slice::from_ref(*g)).is_empty())
        .cloned()
        .collect();
    let approver = matching
        .iter()
        .find_map(|p| p.approver.clone())
        .or_else(|| (!stands_for.is_empty()).then(|| voter_id(&claims.issuer, &claims.subject)));
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
        idp: Some(IdpVoter {
            issuer: claims.issuer.clone(),
            subject: claims.subject.clone(),
            groups: mapped_groups,
        }),
        stands_for,
    }
}

/// The voter id of someone who votes only through their groups: stable for one subject at one
/// issuer, distinct between people (`idp:` and 16 hex digits of SHA-256 over both).
pub fn voter_id(issuer: &str, subject: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(issuer.trim_end_matches('/').as_bytes());
    hash.update([0]);
    hash.update(subject.as_bytes());
    format!("{IDP_VOTER_PREFIX}{}", &hex::encode(hash.finalize())[..16])
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
            idp: None,
            stands_for: Vec::new(),
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
        let directory = Directory::default();
        let alice = from_claims(&people, &directory, &claims("s-alice", None, &[]));
        assert_eq!(alice.approver.as_deref(), Some("alice"));
        assert_eq!(alice.authenticated["subject"], "s-alice");
        let bob = from_claims(
            &people,
            &directory,
            &claims("s-bob", Some("bob@example.org"), &["audit"]),
        );
        assert_eq!(
            (bob.approver.as_deref(), bob.auditor.as_deref()),
            (Some("bob"), Some("audrey"))
        );
        let outsider = from_claims(
            &people,
            &directory,
            &claims("s-eve", Some("eve@example.org"), &["x"]),
        );
        assert_eq!((outsider.approver, outsider.auditor), (None, None));
    }

    #[test]
    fn a_mapped_group_makes_a_voter_whose_id_is_the_person() {
        let people = vec![mapping("subject", "s-alice", Some("alice"), None)];
        let map = [("idp-pay".to_owned(), "payments".to_owned())].into();
        let directory = Directory::default().with_idp_groups("https://idp.example", &map);
        let gina = from_claims(
            &people,
            &directory,
            &claims("s-gina", None, &["x", "idp-pay"]),
        );
        let id = gina.approver.clone().unwrap();
        assert!(id.starts_with("idp:") && id.len() == 20, "{id}");
        assert_eq!(gina.stands_for, ["payments"]);
        let idp = gina.idp.unwrap();
        assert_eq!(
            (idp.subject.as_str(), idp.groups),
            ("s-gina", vec!["idp-pay".to_owned()])
        );
        // Stable for the person, distinct between people and issuers.
        assert_eq!(voter_id("https://idp.example/", "s-gina"), id);
        assert_ne!(voter_id("https://idp.example", "s-gino"), id);
        assert_ne!(voter_id("https://other.example", "s-gina"), id);
        // A mapped person votes as their approver id, groups or not.
        let alice = from_claims(&people, &directory, &claims("s-alice", None, &["idp-pay"]));
        assert_eq!(alice.approver.as_deref(), Some("alice"));
        // An unmapped group makes nobody a voter.
        let eve = from_claims(
            &people,
            &directory,
            &claims("s-eve", None, &["contractors"]),
        );
        assert_eq!((eve.approver, eve.stands_for.len()), (None, 0));
    }
}
