//! Where a vote (or a sighting) came from: the channel that authenticated the person. The
//! audit log records it by its lowercase name (`cli`, `console`, `mattermost`, …); the rules
//! that depend on it ask the channel, not its name.

use std::fmt;

/// The channel a vote or a sighting came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoteSource {
    /// `countersign approvals approve|deny|review`.
    Cli,
    /// The approver API (`POST /approvals/{id}/approve|deny`).
    Http,
    /// The web console, signed in (possibly through an identity provider).
    Console,
    Mattermost,
    Matrix,
    Slack,
}

impl VoteSource {
    /// The name the audit log and the `approval_votes` table record.
    pub fn as_str(self) -> &'static str {
        match self {
            VoteSource::Cli => "cli",
            VoteSource::Http => "http",
            VoteSource::Console => "console",
            VoteSource::Mattermost => "mattermost",
            VoteSource::Matrix => "matrix",
            VoteSource::Slack => "slack",
        }
    }

    /// The source a recorded name stands for; `None` for a name no channel uses (a log is read
    /// leniently: such a vote simply gets nothing a channel grants).
    pub fn parse(name: &str) -> Option<VoteSource> {
        Some(match name {
            "cli" => VoteSource::Cli,
            "http" => VoteSource::Http,
            "console" => VoteSource::Console,
            "mattermost" => VoteSource::Mattermost,
            "matrix" => VoteSource::Matrix,
            "slack" => VoteSource::Slack,
            _ => return None,
        })
    }

    /// Whether the channel asks a denying voter for a reason (a chat reaction cannot carry one).
    pub fn asks_reason(self) -> bool {
        matches!(
            self,
            VoteSource::Cli | VoteSource::Http | VoteSource::Console
        )
    }

    /// Whether the channel carries an identity provider's word about the voter (only the
    /// console's OpenID Connect sign-in does).
    pub fn attests_idp(self) -> bool {
        self == VoteSource::Console
    }
}

impl fmt::Display for VoteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::VoteSource;

    #[test]
    fn a_source_is_recorded_by_its_lowercase_name() {
        for source in [
            VoteSource::Cli,
            VoteSource::Http,
            VoteSource::Console,
            VoteSource::Mattermost,
            VoteSource::Matrix,
            VoteSource::Slack,
        ] {
            let json = serde_json::to_value(source).unwrap();
            assert_eq!(json, serde_json::Value::from(source.as_str()));
            assert_eq!(source.to_string(), source.as_str());
            assert_eq!(VoteSource::parse(source.as_str()), Some(source));
        }
        assert_eq!(VoteSource::parse("webhook"), None);
    }
}
