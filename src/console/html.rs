//! The console's HTML: escaping, the page frame and small shared pieces. Pages are built from
//! escaped strings; everything a person, an agent or a tool wrote goes through [`esc`].

use super::session::Current;
use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: the header with who is signed in (and the sign-out form), then `body`.
pub fn page(title: &str, who: Option<&Current>, body: &str) -> String {
    page_with(title, who, body, "")
}

/// The same page, loaded again every `secs` seconds (a long job's progress; no script needed).
pub fn refreshing_page(title: &str, who: Option<&Current>, body: &str, secs: u32) -> String {
    page_with(
        title,
        who,
        body,
        &format!("<meta http-equiv=\"refresh\" content=\"{secs}\">"),
    )
}

fn page_with(title: &str, who: Option<&Current>, body: &str, head: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{head}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Countersign</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\">\
         <script src=\"/console/static/console.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>",
        esc(title)
    );
    out.push_str(&header(who));
    let _ = writeln!(
        out,
        "<main id=\"main\" tabindex=\"-1\"><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

fn header(who: Option<&Current>) -> String {
    let Some(who) = who else {
        return "<header><span class=\"brand\">Countersign</span></header>".into();
    };
    let id = &who.identity;
    let mut nav = String::from(
        "<header><span class=\"brand\">Countersign</span><nav aria-label=\"Console\"><ul>",
    );
    if id.approver.is_some() {
        nav.push_str("<li><a href=\"/console/inbox\">Inbox</a></li>");
    }
    if id.auditor.is_some() {
        nav.push_str("<li><a href=\"/console/audit\">Audit</a></li>");
        nav.push_str("<li><a href=\"/console/insights\">Insights</a></li>");
    }
    nav.push_str("</ul></nav>");
    let roles: Vec<String> = [("approver", &id.approver), ("auditor", &id.auditor)]
        .iter()
        .filter_map(|(role, v)| v.as_ref().map(|v| format!("{role} {}", esc(v))))
        .collect();
    let roles = if roles.is_empty() {
        "no role here".to_owned()
    } else {
        roles.join(", ")
    };
    let _ = write!(
        nav,
        "<p class=\"who\">Signed in as <strong>{}</strong> ({roles})</p>\
         <form method=\"post\" action=\"/console/logout\" class=\"logout\">{}\
         <button type=\"submit\">Sign out</button></form></header>",
        esc(&id.name),
        csrf_field(who)
    );
    nav
}

/// The hidden CSRF field every form of a session carries.
pub fn csrf_field(who: &Current) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&who.csrf)
    )
}

/// A time for people (RFC 3339, to the second) with the machine-readable form.
pub fn time_ms(ms: i64) -> String {
    let full = crate::audit::rfc3339_of_ms(ms);
    let shown = format!("{}Z", full.get(..19).unwrap_or(&full).replace('T', " "));
    format!("<time datetime=\"{}\">{}</time>", esc(&full), esc(&shown))
}

/// `4 min 12 s`, `1 h 3 min`, `850 ms`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A `<dl>` of (label, already escaped HTML value) pairs.
pub fn facts(rows: &[(&str, String)]) -> String {
    let mut out = String::from("<dl class=\"facts\">");
    for (label, value) in rows {
        let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", esc(label));
    }
    out.push_str("</dl>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(duration_ms(61_000), "1 min 1 s");
        assert_eq!(duration_ms(999), "999 ms");
        assert!(time_ms(0).contains("1970-01-01 00:00:00Z"));
    }
}
