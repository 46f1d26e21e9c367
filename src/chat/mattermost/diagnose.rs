//! `countersign chat test mattermost`: the server URL, the bot token, the channel, and whether
//! the callback URL reaches this gateway; each failure says what to fix.

use super::{HEALTH_PATH, Mattermost, Mode};
use crate::chat::Check;

fn check(what: impl Into<String>, result: Result<(), String>) -> Check {
    match result {
        Ok(()) => Check {
            what: what.into(),
            ok: true,
            fix: None,
        },
        Err(fix) => Check {
            what: what.into(),
            ok: false,
            fix: Some(fix),
        },
    }
}

/// The checks in order; when the server does not answer, the checks that need it are skipped
/// (their fixes would only repeat the first).
pub async fn run(mm: &Mattermost) -> Vec<Check> {
    let base = mm.api.base().to_owned();
    let mut checks = vec![check(
        format!("Mattermost answers at {base}"),
        mm.api.ping().await.map(drop).map_err(|e| {
            format!("{e}; check chat.mattermost.url (the server's base URL, without /api/v4)")
        }),
    )];
    if !checks[0].ok {
        return checks;
    }
    let me = mm.api.me().await;
    checks.push(check(
        "the bot token is accepted",
        match &me {
            Ok(me) if me["is_bot"] == true => Ok(()),
            Ok(me) => Err(format!(
                "the token belongs to {}, who is not a bot account; create a bot (System Console → \
                 Integrations → Bot Accounts) and use its access token",
                me["username"]
            )),
            Err(e) => Err(format!(
                "{e}; create an access token for the bot (POST /api/v4/users/BOT_ID/tokens) and put it \
                 in chat.mattermost.token"
            )),
        },
    ));
    let channel = mm.config.channel.clone();
    let access = async {
        let id = match channel.split_once('/') {
            Some((team, name)) => mm.api.channel_by_name(team, name).await,
            None => mm.api.channel(&channel).await,
        }
        .map_err(|e| e.to_string())?;
        let id = id["id"].as_str().unwrap_or_default().to_owned();
        mm.api
            .channel_members(&id)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    checks.push(check(
        format!("the bot can read channel {channel}"),
        access.await.map_err(|e| {
            format!("{e}; add the bot to the team and to the channel, or fix chat.mattermost.channel (an id or team/channel)")
        }),
    ));
    if mm.config.mode == Mode::Buttons {
        let url = mm.callback(HEALTH_PATH).unwrap_or_default();
        let reached = mm
            .tls
            .client()
            .get(&url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await;
        checks.push(check(
            format!("the callback URL reaches a Countersign gateway ({url})"),
            match reached {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{url} answered {}; is chat.mattermost.callback_url this gateway's public base URL?", r.status())),
                Err(e) => Err(format!(
                    "{}; start the gateway (countersign serve) and make callback_url reachable from Mattermost. \
                     If it resolves to a private or loopback address, add its host name or a CIDR to \
                     ServiceSettings.AllowedUntrustedInternalConnections on the Mattermost server",
                    e.without_url()
                )),
            },
        ));
    }
    let key = mm.api.client_config().await;
    checks.push(check(
        "the server publishes its trigger-signing key (AsymmetricSigningPublicKey)",
        match key {
            Ok(c) if c["AsymmetricSigningPublicKey"].as_str().is_some_and(|k| !k.is_empty()) => Ok(()),
            Ok(_) => Err("the server publishes no key: clicks will be accepted on the context token alone and audited as weaker evidence; upgrade Mattermost".into()),
            Err(e) => Err(format!("{e}: clicks will be audited as weaker evidence")),
        },
    ));
    checks
}
