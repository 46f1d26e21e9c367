//! Who the approvers are: configured people and their groups.

use crate::auth::hash_key;
use crate::config::ApproverConfig;
use std::collections::HashMap;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub groups: Vec<String>,
    token_sha256: Option<String>,
}

/// The configured approvers, by id.
#[derive(Debug, Default)]
pub struct Directory {
    people: HashMap<String, Person>,
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
                };
                (a.id.clone(), person)
            })
            .collect();
        Directory { people }
    }

    pub fn get(&self, id: &str) -> Option<&Person> {
        self.people.get(id)
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
