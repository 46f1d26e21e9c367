//! What an approver's words in a card's thread mean, the same in every backend that reads
//! replies: `approve`, or `deny: <reason>` (`deny <reason>`, or a bare `deny`).

/// What an approver said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Approve,
    Deny(Option<String>),
}

impl Answer {
    /// `(approve, reason)`, as a ballot takes it.
    pub fn into_vote(self) -> (bool, Option<String>) {
        match self {
            Answer::Approve => (true, None),
            Answer::Deny(reason) => (false, reason),
        }
    }
}

/// Reads a reply, case-insensitively, after the quoted fallback (`> …` lines) some clients
/// prepend. Anything else (`approve after lunch?`, `denying nothing`) is not an answer.
pub fn parse(body: &str) -> Option<Answer> {
    let text = body
        .lines()
        .skip_while(|l| l.starts_with('>'))
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.trim();
    let word_end = text
        .find(|c: char| !c.is_alphabetic())
        .unwrap_or(text.len());
    let (word, rest) = text.split_at(word_end);
    match word.to_lowercase().as_str() {
        "approve" | "approved" if rest.trim().is_empty() => Some(Answer::Approve),
        "deny" | "denied" => {
            let reason = rest.trim_start_matches([':', ' ', '-', '\n']).trim();
            Some(Answer::Deny(
                (!reason.is_empty()).then(|| reason.to_owned()),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_say_approve_or_deny_with_a_reason() {
        assert_eq!(parse("approve"), Some(Answer::Approve));
        assert_eq!(parse("Approve "), Some(Answer::Approve));
        assert_eq!(
            parse("deny: not on prod"),
            Some(Answer::Deny(Some("not on prod".into())))
        );
        assert_eq!(
            parse("> <@bot:x> Approval needed\n\nDENY not today"),
            Some(Answer::Deny(Some("not today".into())))
        );
        assert_eq!(parse("deny"), Some(Answer::Deny(None)));
        assert_eq!(parse("approve after lunch?"), None);
        assert_eq!(parse("who asked for this?"), None);
        assert_eq!(parse("denyx"), None);
        assert_eq!(parse("denying nothing"), None);
    }
}
