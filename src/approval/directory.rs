//! Who the approvers are: configured people and their groups, and how much one agent may ask
//! of them at once ([`ApprovalLimits`]).

use super::limits::ApprovalLimits;
use crate::audit::events::EligibleGroup;
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
    /// The identity provider whose groups stand for approver groups, and its groups by the
    /// approver group they stand for (`console.oidc.approver_groups`).
    idp: Option<(String, BTreeMap<String, Vec<String>>)>,
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
            idp: None,
        }
    }

    /// The approvers of `config`, with the identity provider's groups that stand for approver
    /// groups (`console.oidc.approver_groups`), and the default limits.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let directory = Directory::new(&config.approvers);
        match config
            .console
            .oidc
            .as_ref()
            .filter(|_| config.console.enabled)
        {
            Some(oidc) => directory.with_idp_groups(&oidc.issuer, &oidc.approver_groups),
            None => directory,
        }
    }

    /// The same approvers, with `issuer`'s groups standing for approver groups
    /// (`{idp-group: approver-group}`).
    pub fn with_idp_groups(
        mut self,
        issuer: &str,
        approver_groups: &BTreeMap<String, String>,
    ) -> Self {
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (idp_group, group) in approver_groups {
            by_group
                .entry(group.clone())
                .or_default()
                .push(idp_group.clone());
        }
        self.idp = (!by_group.is_empty()).then(|| (issuer.to_owned(), by_group));
        self
    }

    /// For each of `groups` that an identity provider's groups stand for: which, at which
    /// provider (recorded in `approval.requested` as `eligible_groups`).
    pub fn idp_groups(&self, groups: &[String]) -> Vec<EligibleGroup> {
        let Some((issuer, by_group)) = &self.idp else {
            return Vec::new();
        };
        let mut named: Vec<&String> = groups.iter().collect();
        named.sort();
        named.dedup();
        named
            .into_iter()
            .filter_map(|g| {
                Some(EligibleGroup {
                    group: g.clone(),
                    issuer: issuer.clone(),
                    idp_groups: by_group.get(g)?.clone(),
                })
            })
            .collect()
    }

    /// The approver groups that an identity provider's `idp_groups` stand for.
    pub fn stands_for(&self, idp_groups: &[String]) -> Vec<String> {
        let Some((_, by_group)) = &self.idp else {
            return Vec::new();
        };
        by_group
            .iter()
            .filter(|(_, theirs)| theirs.iter().any(|t| idp_groups.contains(t)))
            .map(|(group, _)| group.clone())
            .collect()
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
