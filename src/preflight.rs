//! `countersign config check`: what `serve` would refuse or trip over, found at once and
//! without starting anything. The file itself (syntax, types, fields) is checked by
//! [`crate::config::load`]; this looks at what the file refers to: the policies, the upstream
//! commands, who can approve each rule, the chat servers' URLs and CA files, the listener's
//! address and the database. Whether a chat server answers is `countersign chat test`'s job.

use crate::approval::Directory;
use crate::config::Config;
use crate::policy::{ApprovalSpec, PolicySet};
use std::fmt;
use std::path::Path;

/// How much a finding matters: a problem stops `serve` or leaves calls that nobody can run; a
/// warning is worth knowing but may be intended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Problem,
    Warning,
}

/// One thing found, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Problem => "problem",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: {}: {}", self.field, self.message)
    }
}

/// What a check found, and what was loaded on the way.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The policies, when they loaded.
    pub rules: Option<usize>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
            .count()
    }

    fn add(&mut self, severity: Severity, field: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Checks everything `config` refers to.
pub async fn check(config: &Config) -> Report {
    let mut report = Report::default();
    upstream_commands(config, &mut report);
    if let Some(dir) = &config.policy_dir {
        match PolicySet::load_dir(dir) {
            Ok(policies) => {
                report.rules = Some(policies.rule_count());
                approvers(config, &policies, &mut report);
            }
            Err(e @ crate::policy::PolicyError::ReadDir { .. }) => report.add(
                Severity::Problem,
                "policy_dir",
                format!("{e} ({})", crate::policy::RELATIVE_POLICY_DIR),
            ),
            Err(e) => report.add(Severity::Problem, "policy_dir", e.to_string()),
        }
    }
    if let Err(e) = crate::chat::check_servers(config) {
        report.add(Severity::Problem, "chat", format!("{e:#}"));
    }
    listener(config, &mut report).await;
    database(config, &mut report).await;
    report
}

/// Every stdio upstream's command must be found (on `PATH`, or at its path).
fn upstream_commands(config: &Config, report: &mut Report) {
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let Some(stdio) = &upstream.stdio else {
            continue;
        };
        let command = Path::new(&stdio.command);
        let found = if command.components().count() > 1 {
            let base = stdio.cwd.as_deref().unwrap_or(Path::new("."));
            command.is_file() || base.join(command).is_file()
        } else {
            which::which(command).is_ok()
        };
        if !found {
            report.add(
                Severity::Problem,
                format!("upstreams[{i}].stdio.command"),
                format!(
                    "upstream {}: command `{}` is not found{}",
                    upstream.name,
                    stdio.command,
                    if command.components().count() > 1 {
                        ""
                    } else {
                        " on PATH"
                    }
                ),
            );
        }
    }
}

/// Every rule that holds calls for approval must name people who exist and can reach a
/// quorum, and each of them must have a way to vote. An approver group that an identity
/// provider's group stands for has members the configuration cannot count.
fn approvers(config: &Config, policies: &PolicySet, report: &mut Report) {
    let directory = Directory::from_config(config);
    let groups: std::collections::BTreeSet<&str> = config
        .approvers
        .iter()
        .flat_map(|a| a.groups.iter().map(String::as_str))
        .collect();
    let chats = interactive_chats(config);
    idp_groups(config, policies, report);
    // A rule naming nobody is a denial by design (precedence rule 7), not a mistake.
    let rules = policies
        .approval_rules()
        .filter(|(_, spec)| !spec.approvers.is_empty() || !spec.approver_groups.is_empty());
    for (rule, spec) in rules {
        let field = format!("rule {rule}");
        for problem in unknown_names(spec, &directory, &groups) {
            report.add(Severity::Problem, &field, problem);
        }
        let eligible = directory.resolve(&spec.approvers, &spec.approver_groups);
        let eligible: Vec<&str> = eligible
            .iter()
            .map(String::as_str)
            .filter(|id| directory.get(id).is_some())
            .collect();
        if let Some((severity, message)) = short_of_quorum(spec, &eligible, &directory) {
            report.add(severity, &field, message);
        }
        for id in eligible {
            no_way_to_vote(config, id, &chats, &field, report);
        }
    }
}

/// When fewer configured approvers than the quorum may approve: a problem, or only a warning
/// when the rest may come from an identity provider's groups.
fn short_of_quorum(
    spec: &ApprovalSpec,
    eligible: &[&str],
    directory: &Directory,
) -> Option<(Severity, String)> {
    if eligible.len() >= spec.quorum as usize {
        return None;
    }
    let (quorum, count) = (spec.quorum, eligible.len());
    let who = match eligible.is_empty() {
        true => "nobody".to_owned(),
        false => eligible.join(", "),
    };
    let through_idp = directory.idp_groups(&spec.approver_groups);
    if through_idp.is_empty() {
        return Some((
            Severity::Problem,
            format!(
                "needs {quorum} distinct approvers but only {count} can approve ({who}): every matching call would wait until it expires"
            ),
        ));
    }
    let idp: Vec<&str> = through_idp
        .iter()
        .flat_map(|g| &g.idp_groups)
        .map(String::as_str)
        .collect();
    Some((
        Severity::Warning,
        format!(
            "needs {quorum} distinct approvers but only {count} configured ones can approve ({who}); the rest must be members of the identity provider's groups {} voting from the console",
            idp.join(", ")
        ),
    ))
}

/// An identity provider's group that stands for an approver group no rule names is a
/// mapping that does nothing: likely a typo.
fn idp_groups(config: &Config, policies: &PolicySet, report: &mut Report) {
    let Some(oidc) = &config.console.oidc else {
        return;
    };
    let named: std::collections::BTreeSet<&str> = policies
        .approval_rules()
        .flat_map(|(_, spec)| spec.approver_groups.iter().map(String::as_str))
        .collect();
    for (idp_group, group) in &oidc.approver_groups {
        if !named.contains(group.as_str()) {
            report.add(
                Severity::Warning,
                format!("console.oidc.approver_groups.{idp_group}"),
                format!("approver group `{group}` is named by no rule's approver_groups: members of `{idp_group}` can decide nothing"),
            );
        }
    }
    if !oidc.approver_groups.is_empty() {
        unrecognised_humans(config, report);
    }
}

/// The humans behind agents whom no `people` entry maps by subject or email: signed in
/// through a group, they would vote as someone else, and could approve their agent's calls.
fn unrecognised_humans(config: &Config, report: &mut Report) {
    let people = config.console.oidc.iter().flat_map(|o| &o.people);
    let mapped: std::collections::BTreeSet<&str> = people
        .filter(|p| p.subject.is_some() || p.email.is_some())
        .filter_map(|p| p.approver.as_deref())
        .collect();
    for (i, agent) in config.agents.iter().enumerate() {
        let Some(human) = agent.on_behalf_of.as_deref() else {
            continue;
        };
        if !mapped.contains(human) {
            report.add(
                Severity::Warning,
                format!("agents[{i}].on_behalf_of"),
                format!("`{human}` (behind agent {}) is mapped by no subject or email in console.oidc.people: through an identity provider's group they would vote as someone else, and could approve their own agent's calls", agent.id),
            );
        }
    }
}

/// People and groups a rule names that the configuration does not have.
fn unknown_names(
    spec: &ApprovalSpec,
    directory: &Directory,
    groups: &std::collections::BTreeSet<&str>,
) -> Vec<String> {
    let break_glass = spec.break_glass.as_ref();
    let people = spec
        .approvers
        .iter()
        .chain(break_glass.into_iter().flat_map(|b| &b.approvers));
    // A rule's group may have members only at the identity provider; break-glass is for
    // configured approvers alone.
    let named_groups = spec
        .approver_groups
        .iter()
        .filter(|g| directory.idp_groups(std::slice::from_ref(*g)).is_empty())
        .chain(break_glass.into_iter().flat_map(|b| &b.approver_groups));
    let known_groups = groups.iter().copied().collect::<Vec<_>>().join(", ");
    let mut problems: Vec<String> = people
        .filter(|id| directory.get(id).is_none())
        .map(|id| format!("approver `{id}` is not in `approvers`"))
        .collect();
    problems.extend(
        named_groups
            .filter(|g| !groups.contains(g.as_str()))
            .map(|g| {
                format!("approver group `{g}` has no members (groups with members: {known_groups})")
            }),
    );
    problems
}

/// The chat backends a person can vote in (Mattermost, Matrix, Slack; a webhook only tells).
fn interactive_chats(config: &Config) -> Vec<&'static str> {
    let chat = &config.chat;
    [
        chat.mattermost.as_ref().map(|_| "mattermost"),
        chat.matrix.as_ref().map(|_| "matrix"),
        chat.slack.as_ref().map(|_| "slack"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// An eligible approver with neither an API token nor an account on a configured chat
/// backend cannot vote anywhere; one missing from some backend cannot vote there.
fn no_way_to_vote(config: &Config, id: &str, chats: &[&str], field: &str, report: &mut Report) {
    let Some(person) = config.approvers.iter().find(|a| a.id == id) else {
        return;
    };
    let accounts: Vec<&str> = chats
        .iter()
        .copied()
        .filter(|chat| person.chat.contains_key(*chat))
        .collect();
    if person.token_sha256.is_none() && accounts.is_empty() {
        report.add(
            Severity::Problem,
            field,
            format!("approver `{id}` has no token_sha256 and no account on a configured chat backend: they cannot vote"),
        );
    }
    for chat in chats.iter().filter(|c| !accounts.contains(c)) {
        report.add(
            Severity::Warning,
            field,
            format!(
                "approver `{id}` has no `chat.{chat}` account: their votes in {chat} are refused"
            ),
        );
    }
}

/// `serve` binds `server.listen`: say now if something already holds it.
async fn listener(config: &Config, report: &mut Report) {
    let address = config.server.listen;
    if address.port() == 0 {
        return;
    }
    if let Err(e) = tokio::net::TcpListener::bind(address).await {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process listens there; is countersign already running?)"
        } else {
            ""
        };
        report.add(
            Severity::Warning,
            "server.listen",
            format!("{address}: `serve` could not bind it now: {e}{hint}"),
        );
    }
}

/// The database must be reachable; a SQLite file's directory must exist (the file is created
/// on first start).
async fn database(config: &Config, report: &mut Report) {
    if config.policy_dir.is_none() {
        return;
    }
    let url = &config.database.url;
    if let Some(path) = sqlite_file(url) {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            report.add(
                Severity::Problem,
                "database.url",
                format!(
                    "{}: the directory does not exist",
                    dir.unwrap_or(path).display()
                ),
            );
        }
        return;
    }
    // Connect only: `serve` migrates, a check changes nothing.
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let connect = sqlx::AnyConnection::connect(url);
    match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
        }
        Ok(Err(e)) => report.add(Severity::Problem, "database.url", e.to_string()),
        Err(_) => report.add(
            Severity::Problem,
            "database.url",
            "no answer from the database within 5 s",
        ),
    }
}

/// The file of a `sqlite:` URL (`None` for in-memory databases and other backends).
fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}
