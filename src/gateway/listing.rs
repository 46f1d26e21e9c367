//! Merged list results (`tools/list`, `prompts/list`, `resources/list`,
//! `resources/templates/list`) and keeping the catalog fresh.

use super::catalog::{Listing, Snapshot};
use super::{Caller, Gateway};
use crate::jsonrpc;
use crate::protocol::Era;
use crate::upstream::ClientContext;
use serde_json::{Value, json};
use std::sync::Arc;

/// Most pages followed when reading one upstream's listing.
const MAX_UPSTREAM_PAGES: usize = 100;

impl Gateway {
    /// One page of a merged listing. The first page re-reads the listing from every upstream,
    /// so a client that lists sees the current state; later pages come from the same snapshot.
    pub(super) async fn list(&self, caller: &Caller, listing: Listing, request: &Value) -> Value {
        let id = request["id"].clone();
        let cursor = jsonrpc::param_str(request, "cursor");
        if cursor.is_none() {
            self.refresh(listing, &caller.client).await;
        }
        let snapshot = self.snapshot();
        let Ok((mut items, next)) = snapshot.page(listing, cursor, self.page_size) else {
            return jsonrpc::error(
                Some(id),
                jsonrpc::code::INVALID_PARAMS,
                "invalid or expired cursor; list again without a cursor",
            );
        };
        if listing == Listing::Tools {
            items.retain(|tool| !self.hidden(caller, &snapshot, tool));
        }
        let mut result = json!({listing.key(): items});
        if let Some(next) = next {
            result["nextCursor"] = Value::String(next);
        }
        if caller.client.era == Era::Modern {
            // Results may differ per agent once policy filters them: never share caches.
            result["ttlMs"] = json!(0);
            result["cacheScope"] = json!("private");
            result["resultType"] = json!("complete");
        }
        jsonrpc::result(id, result)
    }

    /// A tool the gate would refuse to this agent whatever the arguments is not listed.
    fn hidden(&self, caller: &Caller, snapshot: &Snapshot, tool: &Value) -> bool {
        let route = tool
            .get("name")
            .and_then(Value::as_str)
            .and_then(|n| snapshot.tool(n));
        route.is_some_and(|r| {
            let upstream = &self.upstreams[r.upstream].name;
            self.gate.hides(&caller.agent, upstream, &r.name, &r.tool)
        })
    }

    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    /// Re-reads one listing from every upstream that offers it, concurrently.
    pub(super) async fn refresh(&self, listing: Listing, client: &ClientContext) {
        let reads = self
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, _)| self.read_listing(i, listing, client));
        let results = futures::future::join_all(reads).await;
        self.store(listing, results.into_iter().enumerate());
    }

    /// Re-reads one upstream's listing (after it said the listing changed).
    pub(super) async fn refresh_one(&self, upstream: usize, listing: Listing) {
        let result = self
            .read_listing(upstream, listing, &gateway_client())
            .await;
        self.store(listing, std::iter::once((upstream, result)));
    }

    /// Reads the catalog of every upstream; used at start so calls work before any listing.
    pub async fn refresh_all(&self) {
        for listing in Listing::ALL {
            self.refresh(listing, &gateway_client()).await;
        }
    }

    fn store(&self, listing: Listing, results: impl Iterator<Item = (usize, Option<Vec<Value>>)>) {
        let mut items = self.items.lock().expect("catalog lock");
        for (upstream, result) in results {
            if let Some(list) = result {
                items[upstream].items.insert(listing, Arc::new(list));
            }
        }
        let previous = self.snapshot();
        let fresh = Snapshot::build(&self.namespaces, &items, Some(&previous));
        *self.snapshot.write().expect("snapshot lock") = Arc::new(fresh);
    }

    /// All items of one listing from one upstream, following its cursors. `None` when the
    /// upstream could not be read (its previous items are kept).
    async fn read_listing(
        &self,
        upstream: usize,
        listing: Listing,
        client: &ClientContext,
    ) -> Option<Vec<Value>> {
        let up = &self.upstreams[upstream];
        let caps = up.capabilities();
        if caps.as_object().is_some_and(|c| !c.is_empty())
            && caps.get(listing.capability()).is_none()
        {
            return Some(Vec::new());
        }
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_UPSTREAM_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let request = jsonrpc::request(json!("cs-list"), listing.method(), params);
            let response = match up.request(request, client).await {
                Ok(exchange) => exchange.response().await,
                Err(e) => {
                    tracing::warn!(upstream = %up.name, error = %e, listing = listing.method(), "could not list");
                    return None;
                }
            };
            if response.pointer("/error/code") == Some(&json!(jsonrpc::code::METHOD_NOT_FOUND)) {
                return Some(Vec::new());
            }
            let result = response.get("result");
            let Some(page) = result
                .and_then(|r| r.get(listing.key()))
                .and_then(Value::as_array)
            else {
                tracing::warn!(upstream = %up.name, listing = listing.method(), response = ?response, "listing failed");
                return None;
            };
            all.extend(page.iter().cloned());
            cursor = result
                .and_then(|r| r.get("nextCursor"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                return Some(all);
            }
        }
        tracing::warn!(upstream = %up.name, listing = listing.method(), "listing has too many pages; truncated");
        Some(all)
    }
}

/// The context the gateway uses for its own requests: the upstream's preferred era.
fn gateway_client() -> ClientContext {
    ClientContext {
        era: Era::Modern,
        protocol_version: crate::protocol::MODERN_VERSION.into(),
        capabilities: json!({}),
        mirrored_headers: Vec::new(),
    }
}
