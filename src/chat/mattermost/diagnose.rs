//! `countersign chat test mattermost`: the server URL, the bot token, the channel, and whether
//! the callback URL reaches this gateway; each failure says what to fix.

use super::api::ApiError;
use super::{HEALTH_PATH, Mattermost, Mode};
use crate::chat::Check;

/// A check that passed when `fix` is `None`, else failed with what the operator should change.
fn check(what: impl Into<String>, fix: Option<String>) -> Check {
    Check {
        what: what.into(),
        ok: fix.is_none(),
        fix,
    }
}

/// The checks in order; when the server does not answer, the checks that need it are skipped
/// (their fixes would only repeat the first).
pub async fn run(mm: &Mattermost) -> Vec<Check> {
    let answers = server_answers(mm).await;
    if !answers.ok {
        return vec![answers];
    }
    let mut checks = vec![
        answers,
        token_is_a_bot(mm).await,
        channel_readable(mm).await,
    ];
    if mm.config.mode == Mode::Buttons {
        checks.push(callback_reaches_us(mm).await);
    }
    checks.push(signing_key_published(mm).await);
    checks
}

async fn server_answers(mm: &Mattermost) -> Check {
    let base = mm.api.base().to_owned();
    check(
        format!("Mattermost answers at {base}"),
        mm.api.ping().await.err().map(|e| {
            format!("{e}; check chat.mattermost.url (the server's base URL, without /api/v4)")
        }),
    )
}

async fn token_is_a_bot(mm: &Mattermost) -> Check {
    let fix = match mm.api.me().await {
        Ok(me) if me["is_bot"] == true => None,
        Ok(me) => Some(format!(
            "the token belongs to {}, who is not a bot account; create a bot (System Console → \
             Integrations → Bot Accounts) and use its access token",
            me["username"]
        )),
        Err(e) => Some(format!(
            "{e}; create an access token for the bot (POST /api/v4/users/BOT_ID/tokens) and put it \
             in chat.mattermost.token"
        )),
    };
    check("the bot token is accepted", fix)
}

async fn channel_readable(mm: &Mattermost) -> Check {
    let channel = &mm.config.channel;
    check(
        format!("the bot can read channel {channel}"),
        read_channel(mm, channel).await.err().map(|e| {
            format!("{e}; add the bot to the team and to the channel, or fix chat.mattermost.channel (an id or team/channel)")
        }),
    )
}

/// Finds `channel` (an id or `team/name`) and lists its members.
async fn read_channel(mm: &Mattermost, channel: &str) -> Result<(), ApiError> {
    let found = match channel.split_once('/') {
        Some((team, name)) => mm.api.channel_by_name(team, name).await,
        None => mm.api.channel(channel).await,
    }?;
    let id = found["id"].as_str().unwrap_or_default();
    mm.api.channel_members(id).await?;
    Ok(())
}

async fn callback_reaches_us(mm: &Mattermost) -> Check {
    let url = mm.callback(HEALTH_PATH).unwrap_or_default();
    let reached = mm
        .tls
        .client()
        .get(&url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    let fix = match reached {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!(
            "{url} answered {}; is chat.mattermost.callback_url this gateway's public base URL?",
            r.status()
        )),
        Err(e) => Some(format!(
            "{}; start the gateway (countersign serve) and make callback_url reachable from Mattermost. \
             If it resolves to a private or loopback address, add its host name or a CIDR to \
             ServiceSettings.AllowedUntrustedInternalConnections on the Mattermost server",
            e.without_url()
        )),
    };
    check(
        format!("the callback URL reaches a Countersign gateway ({url})"),
        fix,
    )
}

async fn signing_key_published(mm: &Mattermost) -> Check {
    let fix = match mm.api.client_config().await {
        Ok(c) if c["AsymmetricSigningPublicKey"].as_str().is_some_and(|k| !k.is_empty()) => None,
        Ok(_) => Some("the server publishes no key: clicks will be accepted on the context token alone and audited as weaker evidence; upgrade Mattermost".into()),
        Err(e) => Some(format!("{e}: clicks will be audited as weaker evidence")),
    };
    check(
        "the server publishes its trigger-signing key (AsymmetricSigningPublicKey)",
        fix,
    )
}
