//! Opening the audit log as configured: where its keys and anchors are, created on first use.

use super::{Anchors, AuditError, AuditKeys, AuditLog, RedactionKey, SigningKey, TrustedKeys};
use crate::config::AuditConfig;
use crate::store::Db;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The files the audit log is kept with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPaths {
    pub signing_key: PathBuf,
    pub redaction_key: PathBuf,
    pub anchors: PathBuf,
}

impl AuditPaths {
    /// The configured paths, or their defaults for `database_url`: beside a SQLite file, or
    /// in a directory per database under the state directory.
    pub fn of(config: &AuditConfig, database_url: &str) -> AuditPaths {
        let base = default_base(database_url);
        let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", base.display()));
        AuditPaths {
            signing_key: config
                .signing_key
                .clone()
                .unwrap_or_else(|| with(".signing-key")),
            redaction_key: config
                .redaction_key
                .clone()
                .unwrap_or_else(|| with(".redaction-key")),
            anchors: config
                .anchors
                .file
                .clone()
                .unwrap_or_else(|| with(".anchors")),
        }
    }
}

/// `countersign.db` for `sqlite://countersign.db`; `STATE/<hash of the URL>/audit` otherwise.
fn default_base(database_url: &str) -> PathBuf {
    let file = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .filter(|path| !path.is_empty() && !path.contains(":memory:"));
    match file {
        Some(path) => PathBuf::from(path),
        None => {
            let state = std::env::var_os("COUNTERSIGN_STATE_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("countersign"))
                })
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".local/state/countersign"))
                })
                .unwrap_or_else(|| PathBuf::from(".countersign"));
            let id = hex::encode(&Sha256::digest(database_url.as_bytes())[..8]);
            state.join(id).join("audit")
        }
    }
}

/// Loads (or creates) the configured keys.
pub fn load_keys(config: &AuditConfig, paths: &AuditPaths) -> Result<Arc<AuditKeys>, AuditError> {
    let (signing, created) = SigningKey::load_or_create(&paths.signing_key)?;
    if created {
        tracing::warn!(
            path = %paths.signing_key.display(),
            key = signing.id(),
            public_key = %signing.public_hex(),
            "created a new audit signing key: back it up, keep it off the database host if you can, and give auditors its public key"
        );
    }
    let mut trusted = TrustedKeys::new();
    trusted.add(signing.public());
    for key in &config.trusted_keys {
        trusted.add_text(key)?;
    }
    let (redaction, created) = RedactionKey::load_or_create(&paths.redaction_key)?;
    if created {
        tracing::warn!(path = %paths.redaction_key.display(), "created a new redaction key: whoever holds it can confirm redacted values they already know");
    }
    Ok(Arc::new(AuditKeys {
        signing,
        trusted,
        redaction,
    }))
}

/// Opens the log on `db` with the configured keys and anchors.
pub async fn open(
    db: Db,
    config: &AuditConfig,
    database_url: &str,
) -> Result<AuditLog, AuditError> {
    let paths = AuditPaths::of(config, database_url);
    let keys = load_keys(config, &paths)?;
    let anchors = Anchors::new(
        paths.anchors.clone(),
        Duration::from_secs(config.anchors.every_secs),
    );
    let log = AuditLog::open_with(db, keys, Some(anchors)).await?;
    log.introduce_key().await?;
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_sit_beside_a_sqlite_file_or_per_database() {
        let config = AuditConfig::default();
        let paths = AuditPaths::of(&config, "sqlite:///var/lib/cs/countersign.db?mode=rwc");
        assert_eq!(
            paths.signing_key,
            PathBuf::from("/var/lib/cs/countersign.db.signing-key")
        );
        assert_eq!(
            paths.anchors,
            PathBuf::from("/var/lib/cs/countersign.db.anchors")
        );
        let a = AuditPaths::of(&config, "postgres://u@h/a");
        let b = AuditPaths::of(&config, "postgres://u@h/b");
        assert_ne!(a.signing_key, b.signing_key);
        assert!(a.signing_key.ends_with("audit.signing-key"));
    }
}
