//! The merged view of what the upstreams offer: tools, prompts, resources and templates.
//!
//! Tool and prompt names are namespaced `prefix<sep>name`; resources keep their URIs. Each
//! listing is fetched whole from every upstream (following its cursors) and served to clients
//! in pages with the gateway's own opaque cursors. Tool input schemas are compiled once here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The four merged listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listing {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl Listing {
    pub const ALL: [Listing; 4] = [
        Listing::Tools,
        Listing::Prompts,
        Listing::Resources,
        Listing::ResourceTemplates,
    ];

    pub fn from_method(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => Listing::Tools,
            "prompts/list" => Listing::Prompts,
            "resources/list" => Listing::Resources,
            "resources/templates/list" => Listing::ResourceTemplates,
            _ => return None,
        })
    }

    pub fn method(self) -> &'static str {
        match self {
            Listing::Tools => "tools/list",
            Listing::Prompts => "prompts/list",
            Listing::Resources => "resources/list",
            Listing::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The result field holding the items.
    pub fn key(self) -> &'static str {
        match self {
            Listing::Tools => "tools",
            Listing::Prompts => "prompts",
            Listing::Resources => "resources",
            Listing::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The server capability that says an upstream offers this listing.
    pub fn capability(self) -> &'static str {
        match self {
            Listing::Tools => "tools",
            Listing::Prompts => "prompts",
            Listing::Resources | Listing::ResourceTemplates => "resources",
        }
    }

    fn namespaced(self) -> bool {
        matches!(self, Listing::Tools | Listing::Prompts)
    }

    fn tag(self) -> char {
        match self {
            Listing::Tools => 't',
            Listing::Prompts => 'p',
            Listing::Resources => 'r',
            Listing::ResourceTemplates => 'T',
        }
    }
}

/// Where a namespaced tool lives, and how to check its arguments.
#[derive(Clone)]
pub struct ToolRoute {
    pub upstream: usize,
    /// The name the upstream knows the tool by.
    pub name: String,
    /// The tool as the upstream described it (annotations, schemas), for policy.
    pub tool: Arc<Value>,
    /// The compiled `inputSchema`, or why it could not be compiled.
    pub validator: Arc<Result<jsonschema::Validator, SchemaError>>,
    /// Arguments mirrored in `Mcp-Param-{header}` (2026-07-28 `x-mcp-header`): (header, argument).
    pub mirrored: Arc<[(String, String)]>,
}

/// Namespacing rules shared by every listing.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// Each upstream's prefix, by upstream index (`""` = unprefixed).
    pub prefixes: Vec<String>,
    pub separator: String,
}

impl Namespaces {
    pub fn expose(&self, upstream: usize, name: &str) -> String {
        match self.prefixes[upstream].as_str() {
            "" => name.to_owned(),
            prefix => format!("{prefix}{}{name}", self.separator),
        }
    }
}

/// One upstream's items for every listing, as it last returned them.
#[derive(Default, Clone)]
pub struct UpstreamItems {
    pub items: HashMap<Listing, Arc<Vec<Value>>>,
}

/// An immutable merged view; replaced whole when any upstream's listing changes.
#[derive(Default)]
pub struct Snapshot {
    lists: HashMap<Listing, Vec<Value>>,
    tools: HashMap<String, ToolRoute>,
    prompts: HashMap<String, (usize, String)>,
    resources: HashMap<String, usize>,
    /// Literal prefixes of resource templates (text before the first `{`), longest first.
    templates: Vec<(String, usize)>,
}

impl Snapshot {
    /// Merges the upstreams' items; the first upstream to claim an exposed name keeps it.
    pub fn build(
        ns: &Namespaces,
        per_upstream: &[UpstreamItems],
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let mut snap = Snapshot::default();
        for listing in Listing::ALL {
            let mut merged = Vec::new();
            for (upstream, items) in per_upstream.iter().enumerate() {
                for item in items
                    .items
                    .get(&listing)
                    .map(|v| v.as_slice())
                    .unwrap_or_default()
                {
                    if let Some(exposed) = snap.route(ns, listing, upstream, item, previous) {
                        merged.push(exposed);
                    }
                }
            }
            snap.lists.insert(listing, merged);
        }
        snap.templates
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        snap
    }

    /// Records the route for one item and returns the item as clients see it.
    fn route(
        &mut self,
        ns: &Namespaces,
        listing: Listing,
        upstream: usize,
        item: &Value,
        previous: Option<&Snapshot>,
    ) -> Option<Value> {
        let field = if matches!(listing, Listing::Resources) {
            "uri"
        } else if matches!(listing, Listing::ResourceTemplates) {
            "uriTemplate"
        } else {
            "name"
        };
        let key = item.get(field)?.as_str()?.to_owned();
        let exposed = if listing.namespaced() {
            ns.expose(upstream, &key)
        } else {
            key.clone()
        };
        let fresh = match listing {
            Listing::Tools => self.route_tool(upstream, &key, &exposed, item, previous),
            Listing::Prompts => self
                .prompts
                .insert(exposed.clone(), (upstream, key))
                .is_none(),
            Listing::Resources => self.resources.insert(exposed.clone(), upstream).is_none(),
            Listing::ResourceTemplates => {
                let literal = key.split('{').next().unwrap_or_default().to_owned();
                self.templates.push((literal, upstream));
                true
            }
        };
        if !fresh {
            tracing::warn!(name = %exposed, upstream, "name offered by two upstreams; the first one keeps it");
            return None;
        }
        let mut out = item.clone();
        if listing.namespaced() {
            out[field] = Value::String(exposed);
        }
        Some(out)
    }

    fn route_tool(
        &mut self,
        upstream: usize,
        name: &str,
        exposed: &str,
        item: &Value,
        previous: Option<&Snapshot>,
    ) -> bool {
        if self.tools.contains_key(exposed) {
            return false;
        }
        let reused = previous
            .and_then(|p| p.tools.get(exposed))
            .filter(|r| r.upstream == upstream && *r.tool == *item)
            .cloned();
        let route = reused.unwrap_or_else(|| ToolRoute {
            upstream,
            name: name.to_owned(),
            tool: Arc::new(item.clone()),
            validator: Arc::new(compile_schema(item.get("inputSchema"))),
            mirrored: mirrored_params(item.get("inputSchema")).into(),
        });
        self.tools.insert(exposed.to_owned(), route);
        true
    }

    pub fn tool(&self, exposed: &str) -> Option<&ToolRoute> {
        self.tools.get(exposed)
    }

    /// The exposed names a client probably meant by an unknown `name`: the tools the upstreams
    /// call `name` (it lacks its namespace), sorted.
    pub fn tools_named(&self, name: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .tools
            .iter()
            .filter(|(_, route)| route.name == name)
            .map(|(exposed, _)| exposed.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    pub fn prompt(&self, exposed: &str) -> Option<&(usize, String)> {
        self.prompts.get(exposed)
    }

    /// The upstream serving a resource URI: a listed resource, else the longest template prefix.
    pub fn resource(&self, uri: &str) -> Option<usize> {
        self.resources.get(uri).copied().or_else(|| {
            self.templates
                .iter()
                .find(|(prefix, _)| !prefix.is_empty() && uri.starts_with(prefix.as_str()))
                .map(|(_, up)| *up)
        })
    }

    /// One page of a listing: the items and the cursor of the next page, if any.
    pub fn page(
        &self,
        listing: Listing,
        cursor: Option<&str>,
        size: usize,
    ) -> Result<(Vec<Value>, Option<String>), CursorError> {
        let all = self
            .lists
            .get(&listing)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let start = match cursor {
            None => 0,
            Some(c) => decode_cursor(listing, c)?,
        };
        if start > all.len() {
            return Err(CursorError);
        }
        let end = (start + size).min(all.len());
        let next = (end < all.len()).then(|| encode_cursor(listing, end));
        Ok((all[start..end].to_vec(), next))
    }
}

/// A cursor the gateway did not mint, or one past the end of the listing.
#[derive(Debug, PartialEq, Eq)]
pub struct CursorError;

fn encode_cursor(listing: Listing, offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("cs1:{}:{offset}", listing.tag()))
}

fn decode_cursor(listing: Listing, cursor: &str) -> Result<usize, CursorError> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| CursorError)?;
    let text = String::from_utf8(raw).map_err(|_| CursorError)?;
    let rest = text.strip_prefix("cs1:").ok_or(CursorError)?;
    let (tag, offset) = rest.split_once(':').ok_or(CursorError)?;
    if tag.chars().eq(std::iter::once(listing.tag())) {
        offset.parse().map_err(|_| CursorError)
    } else {
        Err(CursorError)
    }
}

/// The `(header, argument)` pairs of an `inputSchema`'s `x-mcp-header` properties.
fn mirrored_params(schema: Option<&Value>) -> Vec<(String, String)> {
    let properties = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    properties
        .into_iter()
        .flatten()
        .filter_map(|(arg, prop)| {
            Some((prop.get("x-mcp-header")?.as_str()?.to_owned(), arg.clone()))
        })
        .collect()
}

/// Compiles a tool's `inputSchema`. Remote `$ref`s are never fetched: such a schema fails to
/// compile, and calls to the tool are refused (fail closed).
pub fn compile_schema(schema: Option<&Value>) -> Result<jsonschema::Validator, SchemaError> {
    let schema = schema.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    jsonschema::validator_for(&schema).map_err(|e| SchemaError(Box::new(e)))
}

/// A tool's `inputSchema` that cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SchemaError(Box<jsonschema::ValidationError<'static>>);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns() -> Namespaces {
        Namespaces {
            prefixes: vec!["a".into(), "b".into()],
            separator: "__".into(),
        }
    }

    fn items(tools: Value) -> UpstreamItems {
        let mut u = UpstreamItems::default();
        u.items
            .insert(Listing::Tools, Arc::new(tools.as_array().unwrap().clone()));
        u
    }

    #[test]
    fn tools_of_two_upstreams_are_namespaced_and_routed() {
        let snap = Snapshot::build(
            &ns(),
            &[
                items(json!([{"name":"echo","x-vendor":1}])),
                items(json!([{"name":"echo"}])),
            ],
            None,
        );
        let (page, next) = snap.page(Listing::Tools, None, 10).unwrap();
        let names: Vec<_> = page.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a__echo", "b__echo"]);
        assert_eq!(page[0]["x-vendor"], 1, "unknown fields pass through");
        assert_eq!(next, None);
        let route = snap.tool("b__echo").unwrap();
        assert_eq!((route.upstream, route.name.as_str()), (1, "echo"));
    }

    #[test]
    fn pages_follow_opaque_cursors_to_the_end() {
        let tools: Vec<Value> = (0..5).map(|i| json!({"name": format!("t{i}")})).collect();
        let snap = Snapshot::build(&ns(), &[items(Value::Array(tools))], None);
        let (p1, c1) = snap.page(Listing::Tools, None, 2).unwrap();
        let (p2, c2) = snap.page(Listing::Tools, c1.as_deref(), 2).unwrap();
        let (p3, c3) = snap.page(Listing::Tools, c2.as_deref(), 2).unwrap();
        assert_eq!((p1.len(), p2.len(), p3.len(), c3), (2, 2, 1, None));
        assert_eq!(p3[0]["name"], "a__t4");
    }

    #[test]
    fn foreign_or_cross_listing_cursors_are_refused() {
        let snap = Snapshot::build(&ns(), &[items(json!([{"name":"x"}]))], None);
        assert_eq!(
            snap.page(Listing::Tools, Some("garbage"), 1),
            Err(CursorError)
        );
        let prompt_cursor = encode_cursor(Listing::Prompts, 0);
        assert_eq!(
            snap.page(Listing::Tools, Some(&prompt_cursor), 1),
            Err(CursorError)
        );
    }

    #[test]
    fn resources_route_by_uri_then_by_template_prefix() {
        let mut u = UpstreamItems::default();
        u.items.insert(
            Listing::Resources,
            Arc::new(vec![json!({"uri":"test://static"})]),
        );
        u.items.insert(
            Listing::ResourceTemplates,
            Arc::new(vec![json!({"uriTemplate":"test://template/{id}/data"})]),
        );
        let snap = Snapshot::build(&ns(), &[UpstreamItems::default(), u], None);
        assert_eq!(snap.resource("test://static"), Some(1));
        assert_eq!(snap.resource("test://template/7/data"), Some(1));
        assert_eq!(snap.resource("other://x"), None);
    }

    #[test]
    fn a_remote_ref_schema_does_not_compile() {
        assert!(compile_schema(Some(&json!({"$ref":"https://example.com/s.json"}))).is_err());
        assert!(compile_schema(Some(&json!({"type":"object"}))).is_ok());
    }
}
