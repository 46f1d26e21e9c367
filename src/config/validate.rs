//! What the types cannot express about a parsed configuration, checked section by section in
//! a fixed order (the first problem found is the one reported).

use super::{Config, ServerConfig};
use std::collections::HashSet;

/// A value the configuration's types accept but the gateway does not: the dotted path of the
/// field at fault, and the problem in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Checks every section; the first problem found is returned.
pub(super) fn validate(config: &Config) -> Result<(), Invalid> {
    upstreams(config)?;
    server(config)?;
    token_hashes(config)?;
    let approver_ids = approvers(config)?;
    console(config, &approver_ids)?;
    limits(config)?;
    super::chat::validate(config)
}

/// At least one upstream; unique names and prefixes; exactly one transport each.
fn upstreams(config: &Config) -> Result<(), Invalid> {
    if config.upstreams.is_empty() {
        return Err(Invalid::new(
            "upstreams",
            "at least one upstream is required",
        ));
    }
    let mut names = HashSet::new();
    let mut prefixes = HashSet::new();
    for (i, up) in config.upstreams.iter().enumerate() {
        let at = |f: &str| format!("upstreams[{i}].{f}");
        if up.name.is_empty()
            || !up
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Invalid::new(
                at("name"),
                "use letters, digits, `-` and `_` only",
            ));
        }
        if !names.insert(up.name.as_str()) {
            return Err(Invalid::new(
                at("name"),
                format!("upstream `{}` is defined twice", up.name),
            ));
        }
        if !up.prefix().is_empty() && up.prefix().contains(&config.namespace_separator) {
            return Err(Invalid::new(
                at("prefix"),
                "must not contain the namespace separator",
            ));
        }
        if !prefixes.insert(up.prefix()) {
            return Err(Invalid::new(
                at("prefix"),
                format!("prefix `{}` is used by two upstreams", up.prefix()),
            ));
        }
        transport(up).map_err(|(f, problem)| Invalid::new(at(f), problem))?;
        if up.timeout_secs == 0 {
            return Err(Invalid::new(at("timeout_secs"), "must be at least 1"));
        }
    }
    if config.namespace_separator.is_empty() {
        return Err(Invalid::new("namespace_separator", "must not be empty"));
    }
    Ok(())
}

/// Exactly one of `http` and `stdio`, and an HTTP URL: the field under the upstream, and the
/// problem.
fn transport(up: &super::UpstreamConfig) -> Result<(), (&'static str, &'static str)> {
    match (&up.http, &up.stdio) {
        (Some(_), Some(_)) => Err(("http", "set either `http` or `stdio`, not both")),
        (None, None) => Err(("name", "needs an `http` or a `stdio` section")),
        (Some(http), None)
            if !(http.url.starts_with("http://") || http.url.starts_with("https://")) =>
        {
            Err(("http.url", "must be an http:// or https:// URL"))
        }
        _ => Ok(()),
    }
}

/// A loopback listener unless exposing it is consented to; agents unless anonymous callers are.
fn server(config: &Config) -> Result<(), Invalid> {
    let server = &config.server;
    if !server.listen.ip().is_loopback() && !server.allow_non_loopback {
        return Err(Invalid::new(
            "server.listen",
            "is not a loopback address; set server.allow_non_loopback: true to expose the gateway",
        ));
    }
    if config.agents.is_empty() && !server.allow_anonymous {
        return Err(Invalid::new(
            "agents",
            "no agents are configured; add agents with API keys, or set server.allow_anonymous: true (local testing only)",
        ));
    }
    Ok(())
}

/// Every configured SHA-256 of a key or token is 64 hex digits.
fn token_hashes(config: &Config) -> Result<(), Invalid> {
    let agents = config
        .agents
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("agents[{i}].key_sha256"), Some(&a.key_sha256)));
    let metrics = std::iter::once((
        "server.metrics_token_sha256".to_owned(),
        config.server.metrics_token_sha256.as_ref(),
    ));
    let approvers = config.approvers.iter().enumerate().map(|(i, a)| {
        (
            format!("approvers[{i}].token_sha256"),
            a.token_sha256.as_ref(),
        )
    });
    let auditors = config
        .auditors
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("auditors[{i}].token_sha256"), Some(&a.token_sha256)));
    for (field, hash) in agents.chain(metrics).chain(approvers).chain(auditors) {
        let hex_ok = hash.is_none_or(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !hex_ok {
            return Err(Invalid::new(
                field,
                "must be 64 hex digits (countersign hash-key prints it)",
            ));
        }
    }
    Ok(())
}

/// Unique approver ids, none of them an agent's or reserved. Returns the ids.
fn approvers(config: &Config) -> Result<Vec<&str>, Invalid> {
    let mut approver_ids = HashSet::new();
    for (i, approver) in config.approvers.iter().enumerate() {
        if !approver_ids.insert(approver.id.as_str()) {
            return Err(Invalid::new(
                format!("approvers[{i}].id"),
                format!("approver `{}` is defined twice", approver.id),
            ));
        }
        if config.agents.iter().any(|a| a.id == approver.id) {
            return Err(Invalid::new(
                format!("approvers[{i}].id"),
                format!(
                    "`{}` is also an agent; an agent never approves",
                    approver.id
                ),
            ));
        }
    }
    reserved_ids(config)?;
    Ok(approver_ids.into_iter().collect())
}

/// No approver id may look like the id of someone who votes through an identity provider's
/// group.
fn reserved_ids(config: &Config) -> Result<(), Invalid> {
    let prefix = crate::config::console::IDP_VOTER_PREFIX;
    match config
        .approvers
        .iter()
        .position(|a| a.id.starts_with(prefix))
    {
        Some(i) => Err(Invalid::new(
            format!("approvers[{i}].id"),
            format!(
                "`{}`: ids starting with `{prefix}` name people signed in through an identity provider's group",
                config.approvers[i].id
            ),
        )),
        None => Ok(()),
    }
}

/// The `console:` section, whose people must name configured approvers and auditors.
fn console(config: &Config, approver_ids: &[&str]) -> Result<(), Invalid> {
    let auditor_ids: Vec<&str> = config.auditors.iter().map(|a| a.id.as_str()).collect();
    config
        .console
        .check(approver_ids, &auditor_ids)
        .map_err(|e| Invalid::new(format!("console.{}", e.field), e.problem))
}

/// Timeouts, connection and approval limits, and the page size: none may be 0.
fn limits(config: &Config) -> Result<(), Invalid> {
    let server: &ServerConfig = &config.server;
    let approvals = &config.approvals;
    let at_least_one = [
        (
            "server.header_read_timeout_secs",
            server.header_read_timeout_secs,
        ),
        (
            "server.body_read_timeout_secs",
            server.body_read_timeout_secs,
        ),
        ("server.max_connections", server.max_connections as u64),
        (
            "approvals.max_pending_per_agent",
            approvals.max_pending_per_agent as u64,
        ),
        (
            "approvals.max_pending_per_tool",
            approvals.max_pending_per_tool as u64,
        ),
        (
            "approvals.new_per_minute_per_agent",
            u64::from(approvals.new_per_minute_per_agent),
        ),
        ("server.page_size", server.page_size as u64),
    ];
    match at_least_one.into_iter().find(|(_, value)| *value == 0) {
        Some((field, _)) => Err(Invalid::new(field, "must be at least 1")),
        None => Ok(()),
    }
}
