//! Anchors: signed heads exported off the database.
//!
//! The writer appends its signed head to an append-only file of JSON lines every few seconds
//! (when the head moved) and when it stops. Keep the file where the database owner cannot
//! write (another mount, a host the DBA has no account on, a WORM share). `audit verify
//! --anchors FILE` then requires the log to still hold every anchored head, so a truncated,
//! emptied or re-signed log is caught even by someone who holds the signing key but not the
//! anchors; the writer makes the same check at start-up against the last anchor.

use super::{AnchorsFileError, AuditError};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One anchored head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    pub key_id: String,
    /// Ed25519 over `countersign-audit-head:v1:{seq}:{hash}`, hex.
    pub signature: String,
    /// When it was anchored (RFC 3339).
    pub at: String,
}

/// Where and how often anchors are written.
#[derive(Debug, Clone)]
pub struct Anchors {
    path: PathBuf,
    every: Duration,
}

impl Anchors {
    pub fn new(path: PathBuf, every: Duration) -> Anchors {
        Anchors {
            path,
            every: every.max(Duration::from_millis(100)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn every(&self) -> Duration {
        self.every
    }

    /// The last anchor in the file (none when the file does not exist yet).
    pub fn last(&self) -> Result<Option<Anchor>, AuditError> {
        Ok(read(&self.path)?.pop())
    }

    /// Appends `anchor` and syncs the file to disk.
    pub async fn append(&self, anchor: &Anchor) -> std::io::Result<()> {
        let path = self.path.clone();
        let mut line = serde_json::to_string(anchor).expect("an anchor serialises");
        line.push('\n');
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(line.as_bytes())?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Every anchor in the file at `path`, in order (none when it does not exist).
pub fn read(path: &Path) -> Result<Vec<Anchor>, AuditError> {
    let bad = |source: AnchorsFileError| AuditError::Anchors {
        path: path.display().to_string(),
        source,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(bad(AnchorsFileError::Read(e))),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|source| {
                bad(AnchorsFileError::Line {
                    line: n + 1,
                    source,
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn anchors_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let anchors = Anchors::new(dir.path().join("a/anchors.jsonl"), Duration::from_secs(1));
        assert_eq!(anchors.last().unwrap(), None);
        for seq in 1..=3 {
            let anchor = Anchor {
                seq,
                hash: "ab".repeat(32),
                key_id: "k".into(),
                signature: "s".into(),
                at: "2026-01-01T00:00:00.000000Z".into(),
            };
            anchors.append(&anchor).await.unwrap();
        }
        assert_eq!(anchors.last().unwrap().unwrap().seq, 3);
        assert_eq!(read(anchors.path()).unwrap().len(), 3);
        std::fs::write(anchors.path(), "{not json}\n").unwrap();
        assert!(anchors.last().is_err());
    }
}
