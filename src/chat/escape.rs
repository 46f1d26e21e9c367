//! Approver and agent text on a card is shown, never interpreted: one escaper per markup the
//! backends post in. Reasons, argument values and anything else a person or an agent chose go
//! through one of these; the card's own words do not need to.

/// One line of plain text: line breaks become `⏎` (a reason cannot forge a line of the card)
/// and invisible or direction-changing characters are written out (see [`visible`]).
pub fn one_line(text: &str) -> String {
    let joined: String = text
        .trim()
        .chars()
        .map(|c| if matches!(c, '\n' | '\r') { '⏎' } else { c })
        .collect();
    visible(&joined)
}

/// Characters that change how the text around them reads without being seen themselves
/// (controls, zero-width and bidirectional marks, soft hyphens) written out as `\u{…}`.
pub fn visible(text: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c,
                '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}'
                | '\u{feff}')
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Mattermost markdown: an inline code span, inside which nothing renders (no link, mention,
/// emoji or emphasis). The fence is one backtick longer than any run inside (CommonMark), with
/// a space of padding when the text itself starts or ends with a backtick.
pub fn markdown_code(text: &str) -> String {
    let text = one_line(text);
    if text.is_empty() {
        return String::new();
    }
    let longest = text
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or_default();
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// Mattermost markdown: the lines in a fenced code block. A run of three backticks inside is
/// broken with a zero-width space so it cannot close the block.
pub fn markdown_block(lines: &[String]) -> String {
    let body = lines.join("\n").replace("```", "`\u{200b}``");
    format!("```\n{body}\n```")
}

/// Matrix HTML (`org.matrix.custom.html`): the five characters that could open markup.
pub fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Slack mrkdwn: `&`, `<` and `>` (so no `<http://…|link>`, `<!channel>` or `<@U…>` forms).
pub fn mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack mrkdwn: an inline code span. Slack's spans cannot hold a backtick, so backticks show
/// as `ˋ` (U+02CB).
pub fn mrkdwn_code(text: &str) -> String {
    let text = one_line(text);
    if text.is_empty() {
        return String::new();
    }
    format!("`{}`", mrkdwn(&text.replace('`', "ˋ")))
}

/// Slack mrkdwn: the lines in a code block (backticks shown as `ˋ`, see [`mrkdwn_code`]).
pub fn mrkdwn_block(lines: &[String]) -> String {
    let body = mrkdwn(&lines.join("\n").replace('`', "ˋ"));
    format!("```{body}```")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_outlast_the_backticks_inside() {
        assert_eq!(markdown_code("plain"), "`plain`");
        assert_eq!(markdown_code("a `b` c"), "``a `b` c``");
        assert_eq!(markdown_code("`x`"), "`` `x` ``");
        assert_eq!(markdown_code("two\nlines"), "`two⏎lines`");
        assert_eq!(markdown_code(""), "");
    }

    #[test]
    fn html_and_mrkdwn_cannot_open_markup() {
        assert_eq!(
            html("<a href=\"x\">'</a>&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&lt;/a&gt;&amp;"
        );
        assert_eq!(mrkdwn_code("<!channel> `x`"), "`&lt;!channel&gt; ˋxˋ`");
        assert_eq!(mrkdwn_block(&["```".into()]), "```ˋˋˋ```");
    }

    #[test]
    fn hidden_characters_are_written_out() {
        assert_eq!(visible("a\u{202e}b\u{200b}"), "a\\u{202e}b\\u{200b}");
        assert_eq!(one_line(" ok\r\nApproved by bob "), "ok⏎⏎Approved by bob");
    }
}
