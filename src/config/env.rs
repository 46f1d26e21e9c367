//! `COUNTERSIGN_*` environment overrides.
//!
//! `COUNTERSIGN_SERVER__LISTEN=127.0.0.1:9000` sets `server.listen`; a double underscore
//! separates path segments, a numeric segment indexes a list (`COUNTERSIGN_UPSTREAMS__0__PREFIX`).
//! Values are parsed as YAML scalars, so `true` and `42` keep their types.

use serde_yaml_ng::{Mapping, Value};

pub const PREFIX: &str = "COUNTERSIGN_";

/// Variables that configure the command line rather than the file.
const NOT_CONFIG: &[&str] = &[
    "COUNTERSIGN_CONFIG",
    "COUNTERSIGN_API_KEY",
    "COUNTERSIGN_LOG",
    "COUNTERSIGN_APPROVER_TOKEN",
    "COUNTERSIGN_STATE_DIR",
];

/// One override: the variable's name and the path it sets.
#[derive(Debug, Clone)]
pub struct Override {
    pub var: String,
    pub path: Vec<String>,
    pub value: Value,
}

/// The overrides present in `vars`, in a stable order.
pub fn overrides(vars: impl Iterator<Item = (String, String)>) -> Vec<Override> {
    let mut found: Vec<Override> = vars
        .filter(|(k, _)| k.starts_with(PREFIX) && !NOT_CONFIG.contains(&k.as_str()))
        .map(|(var, raw)| {
            let path = var[PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let value = serde_yaml_ng::from_str(&raw).unwrap_or(Value::String(raw));
            Override { var, path, value }
        })
        .collect();
    found.sort_by(|a, b| a.var.cmp(&b.var));
    found
}

/// Why an override cannot be applied to the document.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("`{segment}` is not a list index")]
    NotAnIndex {
        segment: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("list has no element {0}")]
    NoElement(usize),
    #[error("`{0}` is inside a value that is not a map or list")]
    NotAContainer(String),
}

/// Applies one override to the document, creating maps on the way.
pub fn apply(doc: &mut Value, ov: &Override) -> Result<(), ApplyError> {
    let mut node = doc;
    for (i, seg) in ov.path.iter().enumerate() {
        let last = i + 1 == ov.path.len();
        node = match node {
            Value::Sequence(items) => {
                let index: usize = seg.parse().map_err(|source| ApplyError::NotAnIndex {
                    segment: seg.clone(),
                    source,
                })?;
                items.get_mut(index).ok_or(ApplyError::NoElement(index))?
            }
            Value::Null => {
                *node = Value::Mapping(Mapping::new());
                let Value::Mapping(map) = node else {
                    unreachable!()
                };
                map.entry(Value::String(seg.clone())).or_insert(Value::Null)
            }
            Value::Mapping(map) => map.entry(Value::String(seg.clone())).or_insert(Value::Null),
            _ => return Err(ApplyError::NotAContainer(seg.clone())),
        };
        if last {
            *node = ov.value.clone();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn nested_keys_and_list_indices_are_set_with_yaml_types() {
        let mut d = doc("server: {listen: '127.0.0.1:1'}\nupstreams: [{name: a}]");
        let vars = [
            ("COUNTERSIGN_SERVER__MAX_BODY_BYTES", "42"),
            ("COUNTERSIGN_UPSTREAMS__0__PREFIX", "x"),
            ("COUNTERSIGN_API_KEY", "secret"),
            ("OTHER", "1"),
        ];
        let ovs = overrides(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(ovs.len(), 2);
        for ov in &ovs {
            apply(&mut d, ov).unwrap();
        }
        assert_eq!(d["server"]["max_body_bytes"], Value::from(42));
        assert_eq!(d["upstreams"][0]["prefix"], Value::from("x"));
    }

    #[test]
    fn an_index_past_the_end_is_an_error() {
        let mut d = doc("upstreams: []");
        let ov = &overrides(std::iter::once((
            "COUNTERSIGN_UPSTREAMS__3__NAME".into(),
            "a".into(),
        )))[0];
        assert!(
            apply(&mut d, ov)
                .unwrap_err()
                .to_string()
                .contains("no element 3")
        );
    }
}
