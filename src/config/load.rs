//! Reading and validating the configuration file.

use super::Config;
use super::env::{self, Override};
use super::validate::{Invalid, validate};
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem, located as precisely as the source allows.
#[derive(Debug)]
pub struct ConfigError {
    /// The file, or the environment variable that set the bad value.
    pub source: String,
    pub line: Option<usize>,
    /// Dotted path of the field at fault (`upstreams[0].http.url`).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Loads `path`, applies the process's `COUNTERSIGN_*` overrides, and validates the result.
/// Relative paths inside the file are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source: path.display().to_string(),
        line: None,
        field: None,
        message: format!("cannot read the file: {e}"),
    })?;
    let overrides = env::overrides(std::env::vars());
    let mut config = parse(&text, &path.display().to_string(), &overrides)?;
    let base = path.parent().unwrap_or(Path::new("."));
    resolve_paths(&mut config, base);
    Ok(config)
}

/// Parses YAML text named `source`, applies `overrides`, and validates.
pub fn parse(text: &str, source: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
        source: source.into(),
        line: e.location().map(|l| l.line()),
        field: None,
        message: e.to_string(),
    })?;
    for ov in overrides {
        env::apply(&mut doc, ov).map_err(|e| env_error(ov, e.to_string()))?;
    }
    let config: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        let env_var = overrides.iter().find(|ov| field_matches(&ov.path, &field));
        ConfigError {
            source: env_var.map_or_else(|| source.to_string(), |ov| ov.var.clone()),
            line: if env_var.is_some() {
                None
            } else {
                line_of(text, &field)
            },
            field: Some(field),
            message: inner,
        }
    })?;
    validate(&config).map_err(
        |Invalid {
             field,
             problem: message,
         }| {
            // A value from the environment (a secret, typically) is named by its variable.
            match overrides.iter().find(|ov| field_matches(&ov.path, &field)) {
                Some(ov) => ConfigError {
                    source: ov.var.clone(),
                    line: None,
                    field: Some(field),
                    message,
                },
                None => ConfigError {
                    source: source.into(),
                    line: line_of(text, &field),
                    field: Some(field),
                    message,
                },
            }
        },
    )?;
    Ok(config)
}

fn env_error(ov: &Override, message: String) -> ConfigError {
    ConfigError {
        source: ov.var.clone(),
        line: None,
        field: Some(ov.path.join(".")),
        message,
    }
}

fn field_matches(path: &[String], field: &str) -> bool {
    let dotted = field.replace('[', ".").replace(']', "");
    dotted == path.join(".")
}

/// Best-effort line of a dotted field path in the YAML text: the line of its last key.
fn line_of(text: &str, field: &str) -> Option<usize> {
    let key = field
        .rsplit(['.', '['])
        .find(|s| !s.is_empty() && !s.ends_with(']'))?;
    let key = key.trim_end_matches(']');
    let needle = format!("{key}:");
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&needle)
        })
        .map(|i| i + 1)
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(dir) = config.policy_dir.as_mut() {
        resolve(dir);
    }
    for up in &mut config.upstreams {
        if let Some(cwd) = up.stdio.as_mut().and_then(|s| s.cwd.as_mut()) {
            resolve(cwd);
        }
    }
    config.tls.ca_files.iter_mut().for_each(resolve);
    let audit = &mut config.audit;
    for path in [
        audit.signing_key.as_mut(),
        audit.redaction_key.as_mut(),
        audit.anchors.file.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        resolve(path);
    }
    if let Some(url) = sqlite_url_against(&config.database.url, base) {
        config.database.url = url;
    }
}

/// A `sqlite://` URL whose relative file path is made relative to `base` (the config file's
/// directory), so the database does not depend on where the gateway was started. `None` when
/// there is nothing to change: another backend, an in-memory database, an absolute path.
fn sqlite_url_against(url: &str, base: &Path) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
        return None;
    }
    let resolved = base.join(path);
    let mut url = format!("sqlite://{}", resolved.display());
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
server:
  listen: 127.0.0.1:0
  allow_anonymous: true
upstreams:
  - name: everything
    stdio:
      command: node
  - name: api
    http:
      url: http://127.0.0.1:3901/mcp
";

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let text = "\
server: {allow_anonymous: true}
upstreams:
  - name: api
    http: {url: 'http://127.0.0.1:3901/mcp', headers: {x-api-key: hunter2-header}}
chat:
  mattermost: {url: 'http://127.0.0.1:8065', token: hunter2-token, channel: c, callback_url: 'http://127.0.0.1:8931/chat/mattermost'}
  webhook: {url: 'http://127.0.0.1:9/hook', secret: hunter2-webhook-secret-long-enough}
";
        let config = parse(text, "c.yaml", &[]).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn the_oidc_client_secret_stays_out_of_debug_output() {
        let text = "\
server: {allow_anonymous: true}
upstreams:
  - name: api
    http: {url: 'http://127.0.0.1:3901/mcp'}
console:
  oidc: {issuer: 'https://idp.example', client_id: cs, client_secret: hunter2-client-secret}
";
        let config = parse(text, "c.yaml", &[]).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn relative_sqlite_paths_follow_the_config_file() {
        let base = Path::new("/etc/cs");
        let at = |url: &str| sqlite_url_against(url, base);
        assert_eq!(
            at("sqlite://countersign.db").unwrap(),
            "sqlite:///etc/cs/countersign.db"
        );
        assert_eq!(
            at("sqlite:data/cs.db?mode=rwc").unwrap(),
            "sqlite:///etc/cs/data/cs.db?mode=rwc"
        );
        assert_eq!(at("sqlite:///var/lib/cs.db"), None);
        assert_eq!(at("sqlite::memory:"), None);
        assert_eq!(at("postgres://u@h/db"), None);
    }

    #[test]
    fn a_valid_file_parses() {
        let c = parse(GOOD, "c.yaml", &[]).unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[1].prefix(), "api");
        assert_eq!(c.namespace_separator, "__");
    }

    #[test]
    fn a_type_error_names_file_line_and_field() {
        let bad = GOOD.replace("url: http://127.0.0.1:3901/mcp", "url: [1]");
        let e = parse(&bad, "c.yaml", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("upstreams[1].http.url"));
        assert_eq!(e.line, Some(10));
        assert!(
            e.to_string()
                .starts_with("c.yaml:10: field `upstreams[1].http.url`"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let bad = GOOD.replace(
            "  allow_anonymous: true",
            "  allow_anonymous: true\n  lisen: x",
        );
        let e = parse(&bad, "c.yaml", &[]).unwrap_err();
        assert!(e.message.contains("unknown field `lisen`"), "{e}");
    }

    #[test]
    fn a_yaml_syntax_error_has_a_line() {
        let e = parse("server: [\n", "c.yaml", &[]).unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn a_non_loopback_listener_needs_consent() {
        let bad = GOOD.replace("127.0.0.1:0", "0.0.0.0:8080");
        let e = parse(&bad, "c.yaml", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("server.listen"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn an_upstream_needs_exactly_one_transport() {
        let bad = GOOD.replace("    stdio:\n      command: node\n", "");
        let e = parse(&bad, "c.yaml", &[]).unwrap_err();
        assert!(e.message.contains("`http` or a `stdio`"), "{e}");
    }

    #[test]
    fn an_environment_override_wins_and_is_blamed_for_its_errors() {
        let ov = env::overrides(std::iter::once((
            "COUNTERSIGN_SERVER__LISTEN".into(),
            "127.0.0.1:7777".into(),
        )));
        assert_eq!(
            parse(GOOD, "c.yaml", &ov).unwrap().server.listen.port(),
            7777
        );
        let ov = env::overrides(std::iter::once((
            "COUNTERSIGN_SERVER__LISTEN".into(),
            "nope".into(),
        )));
        let e = parse(GOOD, "c.yaml", &ov).unwrap_err();
        assert_eq!(e.source, "COUNTERSIGN_SERVER__LISTEN");
    }

    #[test]
    fn agents_are_required_unless_anonymous_is_allowed() {
        let bad = GOOD.replace("  allow_anonymous: true\n", "");
        let e = parse(&bad, "c.yaml", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("agents"));
    }
}
