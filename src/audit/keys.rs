//! The keys of the audit log, none of which lives in the database:
//!
//! * the writer's Ed25519 **signing key**, which signs the head of the chain at every commit;
//! * the **trusted public keys** a writer or a verifier accepts heads from (its own, other
//!   replicas', and keys a trusted key introduced in the chain by rotation);
//! * the **redaction key**, an HMAC key that turns a redacted argument into a keyed digest an
//!   auditor who knows the value can confirm, but nobody can reverse.
//!
//! Key files are one line of hex (a 32-byte Ed25519 seed, or 32 random bytes), created with
//! mode 0600 when missing. A key id is the first 16 hex digits of SHA-256 over the raw
//! public key.

use ed25519_dalek::{Signature, Signer as _, Verifier as _, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What is wrong with a key or a signature.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the key file {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key file {} does not hold 64 hex digits (32 bytes)", path.display())]
    Malformed { path: PathBuf },
    #[error("`{0}` is not a public key: expected 64 hex digits, or a file that holds them")]
    BadPublicKey(String),
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// The message a head signature covers.
pub fn head_message(seq: i64, hash: &str) -> Vec<u8> {
    format!("countersign-audit-head:v1:{seq}:{hash}").into_bytes()
}

/// The id of a public key: the first 16 hex digits of SHA-256 over its 32 bytes.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// The writer's signing key.
pub struct SigningKey {
    id: String,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads the key at `path`; creates it (mode 0600) when the file does not exist. Returns
    /// whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), KeyError> {
        let (seed, created) = load_or_create_secret(path)?;
        Ok((SigningKey::from_seed(seed), created))
    }

    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        Ok(SigningKey::from_seed(read_secret(path)?))
    }

    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, KeyError> {
        Ok(SigningKey::from_seed(random_secret()?))
    }

    fn from_seed(seed: [u8; 32]) -> SigningKey {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        SigningKey {
            id: key_id(&key.verifying_key()),
            key,
        }
    }

    /// Writes the key to a new file (mode 0600); refuses to overwrite one.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyError> {
        write_new_secret(path, &self.key.to_bytes())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as 64 hex digits.
    pub fn public_hex(&self) -> String {
        hex::encode(self.public().as_bytes())
    }

    /// The signature (128 hex digits) over the head `seq:hash`.
    pub fn sign_head(&self, seq: i64, hash: &str) -> String {
        hex::encode(self.key.sign(&head_message(seq, hash)).to_bytes())
    }
}

/// Why a head signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("it is signed by key {0}, which is not trusted")]
    UnknownKey(String),
    #[error("its signature is malformed")]
    Malformed,
    #[error("its signature does not verify with key {0}")]
    Invalid(String),
}

/// The public keys whose heads are accepted, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl TrustedKeys {
    pub fn new() -> Self {
        TrustedKeys::default()
    }

    /// Trusts `key`; returns its id.
    pub fn add(&mut self, key: VerifyingKey) -> String {
        let id = key_id(&key);
        self.keys.insert(id.clone(), key);
        id
    }

    /// Trusts a key given as 64 hex digits, or as the path of a file that holds them.
    pub fn add_text(&mut self, text: &str) -> Result<String, KeyError> {
        Ok(self.add(parse_public(text)?))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a head signature by `key_id` over `seq:hash`.
    pub fn verify_head(
        &self,
        key_id: &str,
        seq: i64,
        hash: &str,
        signature_hex: &str,
    ) -> Result<(), HeadError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| HeadError::UnknownKey(key_id.to_owned()))?;
        let bytes: [u8; 64] = hex::decode(signature_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(HeadError::Malformed)?;
        key.verify(&head_message(seq, hash), &Signature::from_bytes(&bytes))
            .map_err(|_| HeadError::Invalid(key_id.to_owned()))
    }
}

/// A public key from 64 hex digits, or from a file that holds them.
pub fn parse_public(text: &str) -> Result<VerifyingKey, KeyError> {
    let bad = || KeyError::BadPublicKey(text.to_owned());
    let hex_text = if text.trim().len() == 64 {
        text.trim().to_owned()
    } else {
        std::fs::read_to_string(text).map_err(|_| bad())?
    };
    let bytes: [u8; 32] = hex::decode(hex_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// The key that turns redacted values into keyed digests (`hmac-sha256:HEX`).
#[derive(Clone)]
pub struct RedactionKey([u8; 32]);

impl fmt::Debug for RedactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedactionKey(..)")
    }
}

impl RedactionKey {
    /// Reads the key at `path`, creating it (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> Result<(RedactionKey, bool), KeyError> {
        let (bytes, created) = load_or_create_secret(path)?;
        Ok((RedactionKey(bytes), created))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> RedactionKey {
        RedactionKey(bytes)
    }

    /// `hmac-sha256:` and the hex HMAC of `value`'s canonical JSON.
    pub fn digest(&self, canonical_value: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(canonical_value);
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

fn load_or_create_secret(path: &Path) -> Result<([u8; 32], bool), KeyError> {
    match read_secret(path) {
        Ok(secret) => Ok((secret, false)),
        Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let secret = random_secret()?;
            match write_new_secret(path, &secret) {
                Ok(()) => Ok((secret, true)),
                // Another process created it first: use theirs.
                Err(KeyError::Create { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    Ok((read_secret(path)?, false))
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn read_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KeyError::Malformed {
            path: path.to_owned(),
        })
}

fn write_new_secret(path: &Path, secret: &[u8; 32]) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let create = |source| KeyError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(create)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    writeln!(file, "{}", hex::encode(secret)).map_err(create)?;
    file.sync_all().map_err(create)
}

fn random_secret() -> Result<[u8; 32], KeyError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_verify_only_with_the_right_key_and_message() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let mut trusted = TrustedKeys::new();
        assert_eq!(trusted.add(key.public()), key.id());
        let sig = key.sign_head(7, &"ab".repeat(32));
        assert_eq!(
            trusted.verify_head(key.id(), 7, &"ab".repeat(32), &sig),
            Ok(())
        );
        assert!(matches!(
            trusted.verify_head(key.id(), 8, &"ab".repeat(32), &sig),
            Err(HeadError::Invalid(_))
        ));
        let forged = other.sign_head(7, &"ab".repeat(32));
        assert!(matches!(
            trusted.verify_head(other.id(), 7, &"ab".repeat(32), &forged),
            Err(HeadError::UnknownKey(_))
        ));
        assert!(matches!(
            trusted.verify_head(key.id(), 7, &"ab".repeat(32), &forged),
            Err(HeadError::Invalid(_))
        ));
        assert_eq!(
            trusted.verify_head(key.id(), 7, &"ab".repeat(32), "zz"),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn key_files_are_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.key");
        let (first, created) = SigningKey::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = SigningKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.id(), again.id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            SigningKey::load(&path),
            Err(KeyError::Malformed { .. })
        ));
        let mut trusted = TrustedKeys::new();
        assert_eq!(trusted.add_text(&first.public_hex()).unwrap(), first.id());
        assert!(trusted.add_text("abc").is_err());
    }

    #[test]
    fn redaction_digests_are_keyed() {
        let a = RedactionKey::from_bytes([1; 32]);
        let b = RedactionKey::from_bytes([2; 32]);
        assert_eq!(a.digest(b"\"hunter2\""), a.digest(b"\"hunter2\""));
        assert_ne!(a.digest(b"\"hunter2\""), b.digest(b"\"hunter2\""));
        assert!(a.digest(b"1").starts_with("hmac-sha256:"));
    }
}
