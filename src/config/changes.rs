//! What a running gateway does when its configuration file changes: nothing but say so. Only
//! the policies (their own directory) reload while running; everything in the file, agents,
//! approvers and auditors included, is read at start, so a change is reported as needing a
//! restart rather than half-applied.

use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the file is looked at.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// The top-level sections whose contents differ between two versions of the file.
pub fn changed_sections(old: &str, new: &str) -> Vec<String> {
    let parse = |text: &str| match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        Ok(serde_yaml_ng::Value::Mapping(map)) => map,
        _ => serde_yaml_ng::Mapping::new(),
    };
    let (old, new) = (parse(old), parse(new));
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|key| old.get(*key) != new.get(*key))
        .filter_map(|key| key.as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Watches `path` until `shutdown`: each new version of the file is logged once at WARN, with
/// the sections that changed and whether it would load, and is not applied.
pub fn watch(path: PathBuf, shutdown: CancellationToken) {
    let Ok(started) = std::fs::read_to_string(&path) else {
        return;
    };
    tokio::spawn(async move {
        let mut seen = started.clone();
        let mut ticks = tokio::time::interval(POLL_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Ok(now) = tokio::fs::read_to_string(&path).await else {
                continue;
            };
            if now == seen {
                continue;
            }
            seen = now;
            report(&path, &started, &seen);
        }
    });
}

fn report(path: &std::path::Path, started: &str, now: &str) {
    let sections = changed_sections(started, now);
    if sections.is_empty() {
        tracing::info!(config = %path.display(), "the configuration file is back to what is running");
        return;
    }
    let sections = sections.join(", ");
    match super::load(path) {
        Ok(_) => tracing::warn!(
            config = %path.display(),
            sections,
            "the configuration file changed; it is read at start only (policies in policy_dir reload on their own): restart countersign to apply it"
        ),
        Err(error) => tracing::warn!(
            config = %path.display(),
            sections,
            %error,
            "the configuration file changed and would not load; the running configuration stays in force"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::changed_sections;

    #[test]
    fn only_the_sections_whose_contents_differ_are_named() {
        let old = "server: {listen: '127.0.0.1:1'}\nagents: [{id: a}]\napprovers: []\n";
        let new = "server: {listen: '127.0.0.1:1'}\nagents: [{id: a}, {id: b}]\nauditors: []\n";
        assert_eq!(
            changed_sections(old, new),
            ["agents", "approvers", "auditors"]
        );
        assert!(changed_sections(old, old).is_empty());
    }
}
