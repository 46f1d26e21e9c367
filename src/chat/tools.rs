//! What cards need to know about tools: each tool's `required` arguments, which a card lists
//! first. An approval records the (redacted) arguments but not the tool's definition, so the
//! gateway tells this registry about each tool as it routes a call to it; a process that routed
//! no call to a tool (the CLI, or a gateway just restarted) lists its fields in the agent's
//! order, still every one of them.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

type Required = Arc<[String]>;
/// Required arguments by server, then tool (nested, so a lookup by `&str` allocates nothing).
type Registry = HashMap<String, HashMap<String, Required>>;

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(RwLock::default)
}

/// Records the `inputSchema.required` list of `tool` on `server` from its definition. Called
/// for every routed call: when nothing changed it only reads.
pub fn learn(server: &str, tool: &str, definition: &Value) {
    let listed = || {
        definition["inputSchema"]["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    };
    let known = {
        let registry = registry().read().expect("tools registry");
        registry
            .get(server)
            .and_then(|tools| tools.get(tool))
            .is_some_and(|required| required.iter().map(String::as_str).eq(listed()))
    };
    if !known {
        let required: Required = listed().map(str::to_owned).collect();
        registry()
            .write()
            .expect("tools registry")
            .entry(server.to_owned())
            .or_default()
            .insert(tool.to_owned(), required);
    }
}

/// The required arguments of `tool` on `server`, as last learnt (empty when unknown).
pub fn required(server: &str, tool: &str) -> Required {
    let registry = registry().read().expect("tools registry");
    registry
        .get(server)
        .and_then(|tools| tools.get(tool))
        .cloned()
        .unwrap_or_else(|| Arc::from(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_required_list_is_learnt_and_updated() {
        let tool = |required: Value| serde_json::json!({"inputSchema": {"required": required}});
        learn(
            "tools-test",
            "pay",
            &tool(serde_json::json!(["to", "amount"])),
        );
        assert_eq!(&*required("tools-test", "pay"), ["to", "amount"]);
        learn("tools-test", "pay", &tool(serde_json::json!(["to"])));
        assert_eq!(&*required("tools-test", "pay"), ["to"]);
        assert!(required("tools-test", "unknown").is_empty());
    }
}
