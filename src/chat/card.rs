//! The plain-text facts of an approval card, shared by the chat backends that render cards:
//! what is asked, by whom, for whom, under which rule, until when, and how far the vote is.

use super::CallSummary;
use crate::approval::{Approval, Status};

/// Longest argument text a card shows; the rest is cut (the full call is in the audit log).
pub const MAX_ARGUMENTS: usize = 600;

/// The card's headline.
pub fn title(approval: &Approval) -> String {
    format!("Approval needed: {} on {}", approval.tool, approval.server)
}

/// The classification banner, when the policy sets one: shown above everything else.
pub fn banner(approval: &Approval) -> Option<String> {
    let label = approval.spec.classification.as_deref()?;
    Some(format!("[{}]", label.to_uppercase()))
}

/// The card's facts, in display order: (label, value).
pub fn facts(approval: &Approval, approvals: u32) -> Vec<(&'static str, String)> {
    vec![
        ("Tool", approval.tool.clone()),
        ("Server", approval.server.clone()),
        ("Agent", approval.agent.clone()),
        (
            "On behalf of",
            approval.on_behalf_of.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Rule", approval.rule.clone()),
        ("Arguments", arguments(approval)),
        ("Expires", utc_time(approval.expires_at)),
        ("Approvals", progress(approval, approvals)),
        ("Request", approval.id.to_string()),
    ]
}

/// The arguments as the card shows them: already redacted by the policy, cut to
/// [`MAX_ARGUMENTS`] characters.
pub fn arguments(approval: &Approval) -> String {
    cut(&approval.arguments.to_string(), MAX_ARGUMENTS)
}

/// `1/2`: counted approvals against the quorum.
pub fn progress(approval: &Approval, approvals: u32) -> String {
    format!("{approvals}/{}", approval.spec.quorum)
}

/// The whole card as plain text (one fact a line).
pub fn plain_text(approval: &Approval, approvals: u32) -> String {
    let mut lines = Vec::new();
    lines.extend(banner(approval));
    lines.push(title(approval));
    for (label, value) in facts(approval, approvals) {
        lines.push(format!("{label}: {value}"));
    }
    lines.join("\n")
}

/// How the approval ended, in one line: `Approved by alice`, `Denied by bob: not on prod`,
/// `Expired: nobody decided in time`. `None` while pending.
pub fn outcome(approval: &Approval) -> Option<String> {
    let by = approval.decided_by.as_deref().unwrap_or("countersign");
    let reason = approval.reason.as_deref().filter(|r| !r.trim().is_empty());
    let with_reason = |head: String| match reason {
        Some(r) => format!("{head}: {r}"),
        None => head,
    };
    Some(match approval.status {
        Status::Pending => return None,
        Status::Approved if approval.break_glass => format!("Approved (break glass) by {by}"),
        Status::Approved => format!("Approved by {by}"),
        Status::Denied => with_reason(format!("Denied by {by}")),
        Status::Expired => "Expired: nobody decided in time".into(),
        Status::Cancelled => with_reason(format!("Cancelled by {by}")),
    })
}

/// The thread reply after an approved call ran.
pub fn finished(call: &CallSummary, post_results: bool) -> String {
    let mut text = format!(
        "Call finished: {} in {} ms",
        call.outcome,
        call.duration.as_millis()
    );
    if let Some(response) = call.response.as_ref().filter(|_| post_results) {
        text.push_str("\nResult: ");
        text.push_str(&cut(&response.to_string(), MAX_ARGUMENTS));
    }
    text
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Unix milliseconds as `2026-11-24 23:25:32 UTC`.
pub fn utc_time(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_795_549_332_758), "2026-11-24 19:42:12 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("héllo", 5), "héllo");
    }
}
