//! Who the approvers are: configured people and their groups, and how much one agent may ask
//! of them at once ([`ApprovalLimits`]).

use super::limits::ApprovalLimits;
use crate::auth::hash_key;
use crate::config::ApproverConfig;
use std::collections::{BTreeMap, HashMap};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub groups: Vec<String>,
    token_sha256: Option<String>,
    /// Chat accounts by backend name.
    pub chat: BTreeMap<String, String>,
}

/// The configured approvers, by id.
#[derive(Debug, Default)]
pub struct Directory {
    people: HashMap<String, Person>,
    limits: ApprovalLimits,
}

impl Directory {
    pub fn new(approvers: &[ApproverConfig]) -> Self {
        let people = approvers
            .iter()
            .map(|a| {
                let person = Person {
                    id: a.id.clone(),
                    groups: a.groups.clone(),
                    token_sha256: a.token_sha256.clone(),
                    chat: a.chat.clone(),
                };
                (a.id.clone(), person)
            })
            .collect();
        Directory {
            people,
            limits: ApprovalLimits::default(),
        }
    }

    /// The same approvers, protected by `limits` instead of the default ones.
    pub fn with_limits(mut self, limits: ApprovalLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How many calls may wait for these approvers, and how fast new ones may come.
    pub fn limits(&self) -> &ApprovalLimits {
        &self.limits
    }

    pub fn get(&self, id: &str) -> Option<&Person> {
        self.people.get(id)
    }

    /// The approver behind a chat account: `accounts` are the names the backend knows the user
    /// by (its id and its username, say); any of them may be the one configured.
    pub fn by_chat(&self, backend: &str, accounts: &[&str]) -> Option<&Person> {
        self.people.values().find(|p| {
            p.chat
                .get(backend)
                .is_some_and(|mine| accounts.contains(&mine.as_str()))
        })
    }

    /// Everyone named in `people`, plus the members of `groups`, sorted and without repeats.
    pub fn resolve(&self, people: &[String], groups: &[String]) -> Vec<String> {
        let mut ids: Vec<String> = people
            .iter()
            .cloned()
            .chain(
                self.people
                    .values()
                    .filter(|p| p.groups.iter().any(|g| groups.contains(g)))
                    .map(|p| p.id.clone()),
            )
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Every approver with an account on `backend`: (approver id, the account as configured),
    /// sorted by approver id.
    pub fn accounts(&self, backend: &str) -> Vec<(&str, &str)> {
        let mut accounts: Vec<(&str, &str)> = self
            .people
            .values()
            .filter_map(|p| Some((p.id.as_str(), p.chat.get(backend)?.as_str())))
            .collect();
        accounts.sort_unstable();
        accounts
    }

    /// The approver whose API token this is.
    pub fn by_token(&self, token: &str) -> Option<&Person> {
        let hash = hash_key(token);
        self.people.values().find(|p| {
            p.token_sha256
                .as_deref()
                .is_some_and(|stored| bool::from(stored.as_bytes().ct_eq(hash.as_bytes())))
        })
    }
}
