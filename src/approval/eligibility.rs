//! Who may vote on an approval, judged on the ledger's entry: the rules every vote goes through
//! (by the `Cast` transition, and by the console and chat backends before they ask for more).

use super::Ballot;
use super::ledger::Entry;
use crate::audit::events::IdpVoter;

/// Why `ballot` may not count on `entry`, if it may not: the agent never approves its own
/// call; its human only when the rule allows; others only when the request named them (or,
/// signed in to the console, hold an identity provider's group the request recorded as
/// standing for a named approver group); break-glass only for those the rule names, with a
/// long enough justification.
pub(super) fn refusal(entry: &Entry, ballot: &Ballot, configured: bool) -> Option<String> {
    let who = ballot.approver.as_str();
    let r = &entry.requested;
    if who == r.agent {
        return Some("the requesting agent cannot vote on its own call".into());
    }
    let standing = entry.standing_groups(ballot.idp.as_ref(), Some(ballot.source));
    if !configured && standing.is_empty() {
        return Some(match &ballot.idp {
            Some(_) => format!(
                "{who} is not a configured approver, and none of their groups stands for an approver group of this call"
            ),
            None => format!("{who} is not a configured approver"),
        });
    }
    if r.on_behalf_of.as_deref() == Some(who) && !r.allow_self_approval {
        return Some(format!(
            "{who} asked for this call (the agent acts on their behalf) and may not approve it"
        ));
    }
    if !entry.may_vote(who, ballot.idp.as_ref(), Some(ballot.source)) {
        return Some(format!("{who} is not an approver for this call"));
    }
    if let Some(justification) = &ballot.break_glass {
        if !ballot.approve {
            return Some("break-glass applies only to an approval".into());
        }
        let Some(grant) = &r.break_glass else {
            return Some("this rule does not allow break-glass".into());
        };
        if !grant.eligible.iter().any(|p| p == who) {
            return Some(format!("{who} may not use break-glass on this rule"));
        }
        let length = justification.trim().chars().count();
        if length < grant.min_justification {
            return Some(format!(
                "a break-glass justification needs at least {} characters (this one has {length})",
                grant.min_justification
            ));
        }
    }
    // The built-in channels ask for a reason; a chat reaction cannot carry one.
    if !ballot.approve
        && ballot.source.asks_reason()
        && ballot.reason.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        return Some("a deny needs a reason".into());
    }
    None
}

/// The voter as the identity provider attested it, with only the groups that make them
/// eligible on this approval (none when the ledger no longer holds it); only for a console
/// vote: no other channel records a provider's word.
pub(super) fn recorded_idp(ballot: &Ballot, entry: Option<&Entry>) -> Option<IdpVoter> {
    let idp = ballot
        .idp
        .as_ref()
        .filter(|_| ballot.source.attests_idp())?;
    let groups = entry
        .map(|e| e.standing_groups(Some(idp), Some(ballot.source)))
        .unwrap_or_default();
    Some(IdpVoter {
        groups,
        ..idp.clone()
    })
}
