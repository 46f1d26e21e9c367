//! The `chat:` section: one entry per backend in use, and what its types cannot say. The chat
//! backends read these; the configuration depends on nothing of theirs.

use super::Invalid;
use secrecy::{ExposeSecret as _, SecretString};

/// The shortest secret accepted (a Slack signing secret, a webhook's HMAC key): shorter ones
/// can be guessed, and then anyone can sign clicks or events.
pub const MIN_SECRET_BYTES: usize = 16;

/// The `chat:` section of the configuration: one entry per backend in use.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// A Mattermost server and bot (see `MattermostConfig`).
    #[serde(default)]
    pub mattermost: Option<MattermostConfig>,
    #[serde(default)]
    pub matrix: Option<MatrixConfig>,
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// `chat.mattermost` in the configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MattermostConfig {
    /// The server's base URL, e.g. `https://mattermost.example.com`.
    pub url: String,
    /// The bot account's access token.
    pub token: SecretString,
    /// The gateway's base URL as the Mattermost server reaches it (`https://gateway.internal:8443`);
    /// clicks go to `{callback_url}/mattermost/action`. Required in `buttons` mode.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The default channel: a channel id, or `team-name/channel-name`.
    pub channel: String,
    #[serde(default)]
    pub mode: MattermostMode,
    /// In `buttons` mode, also read the bot's websocket for who saw a card (reactions,
    /// acknowledgements). Always on in `reactions` mode.
    #[serde(default = "default_true")]
    pub websocket: bool,
}

fn default_true() -> bool {
    true
}

/// How approvers answer in Mattermost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MattermostMode {
    /// Approve / Deny buttons: Mattermost must reach `callback_url`.
    #[default]
    Buttons,
    /// ✅ / ❌ reactions and thread replies, read from the websocket: for servers that cannot
    /// reach the gateway.
    Reactions,
}

/// `chat.matrix` in the configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// The homeserver's client API base URL, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// The bot's access token (better set through `COUNTERSIGN_CHAT__MATRIX__ACCESS_TOKEN`).
    pub access_token: SecretString,
    /// The room cards go to when a rule names no `channel` (a room id such as
    /// `!abc:example.org`). The bot must be invited to it.
    pub room: String,
    /// How long one `/sync` long poll waits for news, in seconds.
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout_secs: u64,
}

fn default_sync_timeout() -> u64 {
    30
}

/// `chat.slack` in the configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The bot token, `xoxb-…` (better set through `COUNTERSIGN_CHAT__SLACK__BOT_TOKEN`).
    pub bot_token: SecretString,
    /// The app's signing secret (better set through `COUNTERSIGN_CHAT__SLACK__SIGNING_SECRET`).
    pub signing_secret: SecretString,
    /// The id of the workspace (team) the app is installed in, `T…`: clicks and replies from
    /// any other team are refused.
    pub team_id: String,
    /// The channel id cards go to when a rule names no `channel`.
    pub channel: String,
    /// The Web API base URL (a stub's, in tests).
    #[serde(default = "default_api_base")]
    pub api_base: String,
}

fn default_api_base() -> String {
    "https://slack.com/api".into()
}

/// `chat.webhook` in the configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: String,
    /// The shared HMAC key (better set through `COUNTERSIGN_CHAT__WEBHOOK__SECRET`).
    pub secret: SecretString,
    /// Longest one delivery may take, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    10
}

/// What the types cannot say about the `chat:` section and the approvers' chat accounts
/// (part of the configuration's validation): the field and the problem.
pub(super) fn validate(config: &super::Config) -> Result<(), Invalid> {
    if let Some(slack) = &config.chat.slack {
        validate_slack(slack, &config.approvers)?;
    }
    if let Some(webhook) = &config.chat.webhook {
        validate_webhook(webhook)?;
    }
    Ok(())
}

/// What the types cannot say about `chat.slack` and the approvers' Slack accounts: a secret
/// long enough that nobody can guess it, a team, and user ids (`U…` or `W…`), never usernames.
fn validate_slack(
    config: &SlackConfig,
    approvers: &[super::ApproverConfig],
) -> Result<(), Invalid> {
    let secret = config.signing_secret.expose_secret().trim();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(Invalid::new(
            "chat.slack.signing_secret",
            format!(
                "is {} bytes; at least {MIN_SECRET_BYTES} are needed, or anyone can sign clicks and approve \
                 as any approver (use the app's Signing Secret, 32 hex characters, from Basic Information)",
                secret.len()
            ),
        ));
    }
    if !is_slack_id(&config.team_id, &['T', 'E']) {
        return Err(Invalid::new(
            "chat.slack.team_id",
            "must be the workspace's team id (T…, from auth.test or the workspace URL)",
        ));
    }
    for (i, approver) in approvers.iter().enumerate() {
        if let Some(account) = approver.chat.get("slack")
            && !is_slack_id(account, &['U', 'W'])
        {
            return Err(Invalid::new(
                format!("approvers[{i}].chat.slack"),
                format!(
                    "`{account}` is not a Slack user id (U… or W…, from the member's profile: \
                     Copy member ID); usernames are not accepted, a member can change theirs"
                ),
            ));
        }
    }
    Ok(())
}

/// `U012AB3CD`: an upper-case letter from `first`, then upper-case letters and digits.
fn is_slack_id(id: &str, first: &[char]) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| first.contains(&c))
        && id.len() >= 3
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A secret long enough (`chat.webhook.secret`).
fn validate_webhook(config: &WebhookConfig) -> Result<(), Invalid> {
    let secret = config.secret.expose_secret().trim();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(Invalid::new(
            "chat.webhook.secret",
            format!(
                "is {} bytes; at least {MIN_SECRET_BYTES} are needed, or anyone can forge the \
                 webhook's signatures (e.g. `openssl rand -hex 32`)",
                secret.len()
            ),
        ));
    }
    Ok(())
}
