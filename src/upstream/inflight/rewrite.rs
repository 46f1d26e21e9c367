//! [`Rewrite`]: a request moved into the upstream's id space, and back.

use crate::jsonrpc;
use crate::protocol::META_PROGRESS_TOKEN;
use crate::upstream::messages::is_response;
use serde_json::Value;

/// What was changed in a request on its way upstream, to undo it on what comes back.
#[derive(Debug, Clone)]
pub(in crate::upstream) struct Rewrite {
    pub upstream_id: i64,
    pub client_id: Value,
    /// The client's `progressToken`; the upstream sees `upstream_id` instead.
    client_token: Option<Value>,
}

impl Rewrite {
    /// Gives `request` the id `upstream_id` and, if it carries a progress token, the token
    /// `upstream_id` too.
    pub fn apply(request: &mut Value, upstream_id: i64) -> Rewrite {
        let client_id = request.get("id").cloned().unwrap_or(Value::Null);
        jsonrpc::set_id(request, upstream_id.into());
        let client_token = request
            .pointer_mut("/params/_meta")
            .and_then(Value::as_object_mut)
            .and_then(|meta| meta.get_mut(META_PROGRESS_TOKEN))
            .map(|token| std::mem::replace(token, upstream_id.into()));
        Rewrite {
            upstream_id,
            client_id,
            client_token,
        }
    }

    /// The upstream's progress token for this request, if the client asked for progress.
    pub(super) fn upstream_token(&self) -> Option<Value> {
        self.client_token.as_ref().map(|_| self.upstream_id.into())
    }

    /// Maps the response's id, or a progress notification's token, back to the client's.
    pub fn restore(&self, msg: &mut Value) {
        if is_response(msg) {
            jsonrpc::set_id(msg, self.client_id.clone());
        } else if jsonrpc::method(msg) == Some("notifications/progress")
            && let (Some(token), Some(client)) =
                (msg.pointer_mut("/params/progressToken"), &self.client_token)
        {
            *token = client.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrite_replaces_id_and_token_and_restores_them() {
        let mut req = json!({"jsonrpc":"2.0","id":"c-1","method":"tools/call",
                             "params":{"name":"x","_meta":{"progressToken":"tok"}}});
        let rw = Rewrite::apply(&mut req, 42);
        assert_eq!(req["id"], 42);
        assert_eq!(req["params"]["_meta"]["progressToken"], 42);

        let mut resp = json!({"jsonrpc":"2.0","id":42,"result":{}});
        rw.restore(&mut resp);
        assert_eq!(resp["id"], "c-1");
        let mut progress = json!({"jsonrpc":"2.0","method":"notifications/progress",
                                  "params":{"progressToken":42,"progress":1}});
        rw.restore(&mut progress);
        assert_eq!(progress["params"]["progressToken"], "tok");
    }

    #[test]
    fn rewrite_without_token_adds_none() {
        let mut req = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
        let rw = Rewrite::apply(&mut req, 7);
        assert!(req.get("params").is_none());
        assert!(rw.upstream_token().is_none());
    }
}
