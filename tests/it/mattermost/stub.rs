//! A contract-faithful Mattermost stub: the REST endpoints Countersign calls, each request
//! checked against the server's published API spec (`contract.json`, the operations we use,
//! taken from the bundled OpenAPI file) and, where the spec is silent or wrong, against the
//! server's documented behaviour. It signs trigger_ids with its own P-256 key as the server does,
//! strips integration URLs and contexts from the posts it returns, applies `update` and `patch`
//! semantics to its stored posts, and clicks by sending the exact callback JSON.

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

pub const BOT_TOKEN: &str = "stub-bot-token";
pub const BOT_ID: &str = "bot00000000000000000000000";
pub const TEAM: &str = "eng";
pub const CHANNEL_ID: &str = "chan0000000000000000000000";
pub const CHANNEL_NAME: &str = "mcp-approvals";

/// Keys kept when an `update` replaces or clears props (`PostActionRetainPropKeys`).
const RETAIN_PROP_KEYS: [&str; 3] = ["from_webhook", "override_username", "override_icon_url"];

/// A Mattermost user of the stub.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
}

impl User {
    /// A user with a 26-character id derived from the name.
    pub fn named(username: &str) -> User {
        let mut id: String = username
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        while id.len() < 26 {
            id.push('0');
        }
        User {
            id,
            username: username.to_owned(),
        }
    }
}

/// What a test can script and inspect.
pub struct Inner {
    /// Stored posts, with their integrations (as in the server's database).
    pub posts: HashMap<String, Value>,
    pub post_order: Vec<String>,
    pub reactions: Vec<Value>,
    /// Opened dialogs: the `dialogs/open` bodies.
    pub dialogs: Vec<Value>,
    /// Requests that broke the contract; a test asserts this stays empty.
    pub violations: Vec<String>,
    /// Every request: `METHOD /path`.
    pub requests: Vec<String>,
    pub members: Vec<User>,
    /// When the request that created each post arrived, by post id (for the benchmark).
    pub post_arrivals: HashMap<String, std::time::Instant>,
}

pub struct Stub {
    pub url: String,
    pub inner: Mutex<Inner>,
    key: SigningKey,
    /// Answer every REST call with 503 (Mattermost down).
    pub down: AtomicBool,
    /// Whether the server is licensed (acknowledgements allowed).
    pub licensed: AtomicBool,
    /// Whether the client config publishes the signing key (older servers do not).
    pub publishes_key: AtomicBool,
    /// Refuse the next N post creations with 503.
    pub fail_posts: AtomicU32,
    /// How long the answer to a created post is held back (ms) after the post exists and
    /// can be seen, replied to and reacted to: the window the real server has between
    /// storing a post and its creator reading the response.
    pub post_answer_delay_ms: AtomicU64,
    counter: AtomicU64,
    events: broadcast::Sender<Value>,
    contract: Vec<Operation>,
    http: reqwest::Client,
}

struct Operation {
    method: Method,
    /// The path template split in segments; `{x}` matches any one segment.
    segments: Vec<String>,
    query: Vec<(String, bool)>,
    body: Option<jsonschema::Validator>,
    body_required: bool,
    id: String,
}

fn load_contract() -> Vec<Operation> {
    let contract: Value = serde_json::from_str(include_str!("contract.json")).unwrap();
    contract["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            let mut body = op["requestBody"].clone();
            // Spec bug (mattermost.md §6): the server takes `props` on /patch as an object.
            if op["operationId"] == "PatchPost" {
                body["properties"]["props"] = json!({"type": "object"});
            }
            Operation {
                method: op["method"].as_str().unwrap().parse().unwrap(),
                segments: op["path"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .map(str::to_owned)
                    .collect(),
                query: op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "query")
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap().to_owned(),
                            p["required"] == true,
                        )
                    })
                    .collect(),
                body: (!body.is_null()).then(|| jsonschema::validator_for(&body).unwrap()),
                body_required: op["requestBodyRequired"] == true,
                id: op["operationId"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

type S = State<Arc<Stub>>;

impl Stub {
    pub async fn start(members: Vec<User>) -> Arc<Stub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stub = Arc::new(Stub {
            url: format!("http://{addr}"),
            inner: Mutex::new(Inner {
                posts: HashMap::new(),
                post_order: Vec::new(),
                reactions: Vec::new(),
                dialogs: Vec::new(),
                violations: Vec::new(),
                requests: Vec::new(),
                members,
                post_arrivals: HashMap::new(),
            }),
            key: SigningKey::from_bytes(&[7u8; 32].into()).unwrap(),
            down: AtomicBool::new(false),
            licensed: AtomicBool::new(false),
            publishes_key: AtomicBool::new(true),
            fail_posts: AtomicU32::new(0),
            post_answer_delay_ms: AtomicU64::new(0),
            counter: AtomicU64::new(0),
            events: broadcast::channel(64).0,
            contract: load_contract(),
            http: countersign::tls::Tls::new(&Default::default())
                .unwrap()
                .client(),
        });
        let app = Router::new()
            .route("/api/v4/posts", post(create_post))
            .route("/api/v4/posts/{post_id}", get(get_post))
            .route("/api/v4/posts/{post_id}/patch", put(patch_post))
            .route("/api/v4/reactions", post(save_reaction))
            .route("/api/v4/channels/{channel_id}", get(get_channel))
            .route(
                "/api/v4/channels/{channel_id}/members",
                get(channel_members),
            )
            .route(
                "/api/v4/teams/name/{team}/channels/name/{channel}",
                get(channel_by_name),
            )
            .route("/api/v4/config/client", get(client_config))
            .route("/api/v4/license/client", get(client_license))
            .route("/api/v4/users/{user_id}", get(get_user))
            .route("/api/v4/users/usernames", post(users_by_usernames))
            .route("/api/v4/users/username/{username}", get(user_by_username))
            .route("/api/v4/system/ping", get(ping))
            .route("/api/v4/actions/dialogs/open", post(open_dialog))
            .route("/api/v4/websocket", get(websocket))
            .layer(axum::middleware::from_fn_with_state(stub.clone(), gate))
            .with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        stub
    }

    fn violation(&self, what: String) {
        self.inner.lock().unwrap().violations.push(what);
    }

    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Checks a request against its operation in the contract; false (and a violation) if the
    /// stub should refuse it.
    fn check(
        &self,
        method: Method,
        path: &str,
        query: &HashMap<String, String>,
        body: Option<&Value>,
    ) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        let Some(op) = self.contract.iter().find(|op| {
            op.method == method
                && op.segments.len() == segments.len()
                && op
                    .segments
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        }) else {
            self.violation(format!("{method} {path}: no such operation in the spec"));
            return false;
        };
        let mut ok = true;
        for (name, required) in &op.query {
            if *required && !query.contains_key(name) {
                self.violation(format!("{}: missing query parameter {name}", op.id));
                ok = false;
            }
        }
        for name in query.keys() {
            // `format=old` is required by the server for these two, though the spec omits it.
            let server_only =
                name == "format" && (op.id == "GetClientConfig" || op.id == "GetClientLicense");
            if !server_only && !op.query.iter().any(|(n, _)| n == name) {
                self.violation(format!("{}: unknown query parameter {name}", op.id));
                ok = false;
            }
        }
        match (&op.body, body) {
            (Some(schema), Some(body)) => {
                for error in schema.iter_errors(body) {
                    self.violation(format!("{}: {error} at {}", op.id, error.instance_path()));
                    ok = false;
                }
            }
            (Some(_), None) if op.body_required => {
                self.violation(format!("{}: a body is required", op.id));
                ok = false;
            }
            (None, Some(_)) => {
                self.violation(format!("{}: takes no body", op.id));
                ok = false;
            }
            _ => {}
        }
        ok
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {BOT_TOKEN}"))
    }

    fn new_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("p{n:025}")
    }

    /// A trigger_id in the server's format, signed by the stub's key.
    pub fn trigger_id(&self, user_id: &str, at_ms: i64) -> String {
        let client = format!("c{:025}", self.counter.fetch_add(1, Ordering::Relaxed));
        let signed = format!("{client}:{user_id}:{at_ms}:");
        let signature: Signature = self.key.sign(signed.as_bytes());
        B64.encode(format!("{signed}{}", B64.encode(signature.to_der())))
    }

    fn public_key_b64(&self) -> String {
        B64.encode(
            p256::PublicKey::from(self.key.verifying_key())
                .to_public_key_der()
                .unwrap()
                .as_bytes(),
        )
    }

    /// The stored post (with integrations), by id.
    pub fn post(&self, id: &str) -> Value {
        self.inner.lock().unwrap().posts[id].clone()
    }

    /// Root posts in the order they were created.
    pub fn cards(&self) -> Vec<Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .post_order
            .iter()
            .map(|id| inner.posts[id].clone())
            .filter(|p| p["root_id"].as_str().unwrap_or_default().is_empty())
            .collect()
    }

    /// Replies in a post's thread.
    pub fn replies(&self, root: &str) -> Vec<Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .post_order
            .iter()
            .map(|id| inner.posts[id].clone())
            .filter(|p| p["root_id"] == root)
            .collect()
    }

    /// The callback JSON the server sends when `user` clicks button `action_id` on `post_id`:
    /// URL and context come from the stored post (`PostActionIntegrationRequest`).
    pub fn action_request(&self, post_id: &str, action_id: &str, user: &User) -> (String, Value) {
        let post = self.post(post_id);
        let action = post["props"]["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
            .find(|a| a["id"] == action_id)
            .unwrap_or_else(|| panic!("post {post_id} has no action {action_id}: {post}"));
        let url = action["integration"]["url"].as_str().unwrap().to_owned();
        let body = json!({
            "user_id": user.id, "user_name": user.username, "channel_id": post["channel_id"],
            "channel_name": CHANNEL_NAME, "team_id": "team0000000000000000000000", "team_domain": TEAM,
            "post_id": post_id, "trigger_id": self.trigger_id(&user.id, now_ms()), "type": "button",
            "data_source": "", "context": action["integration"]["context"],
        });
        (url, body)
    }

    /// Sends a callback body as the server does, and applies the answer's `update` to the post.
    pub async fn send_action(&self, url: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(url)
            .header("accept", "application/json")
            .json(body)
            .send()
            .await
            .expect("the gateway answers clicks");
        assert_eq!(response.status(), 200, "a click must be answered with 200");
        let answer: Value = response.json().await.expect("a JSON click answer");
        if let Some(update) = answer.get("update").filter(|u| !u.is_null()) {
            let post_id = body["post_id"].as_str().unwrap();
            let mut inner = self.inner.lock().unwrap();
            if let Some(post) = inner.posts.get_mut(post_id) {
                apply_update(post, update);
            }
        }
        answer
    }

    /// Sends a click whose answer Mattermost gives up on: it stops waiting after `wait` (its
    /// `OutgoingIntegrationRequestsTimeout`), closes the connection, and applies nothing of the
    /// answer, whenever that comes; the card keeps what it showed.
    pub async fn send_action_given_up(&self, url: &str, body: &Value, wait: Duration) {
        let sent = self
            .http
            .post(url)
            .header("accept", "application/json")
            .timeout(wait)
            .json(body)
            .send()
            .await;
        // Whatever came back (or not), the server no longer applies it.
        drop(sent);
    }

    /// A user renames themselves (`PUT /users/{id}/patch` on the real server), as the server
    /// broadcasts it (`user_updated`).
    pub fn rename(&self, user_id: &str, username: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(user) = inner.members.iter_mut().find(|u| u.id == user_id) {
            user.username = username.to_owned();
        }
        drop(inner);
        let user = json!({"id": user_id, "username": username, "is_bot": false});
        self.broadcast("user_updated", json!({"user": user}));
    }

    /// `user` clicks `action_id` on `post_id`.
    pub async fn click(&self, post_id: &str, action_id: &str, user: &User) -> Value {
        let (url, body) = self.action_request(post_id, action_id, user);
        self.send_action(&url, &body).await
    }

    /// `user` submits the last dialog opened for them with `reason` (or cancels it).
    pub async fn submit_dialog(&self, user: &User, reason: Option<&str>) -> Value {
        self.submit_dialog_with(user, reason, |_| {}).await
    }

    /// The same, with the `state` the client sends changed by `tamper` first (the client
    /// holds it, so it can).
    pub async fn submit_dialog_with(
        &self,
        user: &User,
        reason: Option<&str>,
        tamper: impl FnOnce(&mut Value),
    ) -> Value {
        let mut dialog = self
            .inner
            .lock()
            .unwrap()
            .dialogs
            .last()
            .cloned()
            .expect("a dialog was opened");
        tamper(&mut dialog["dialog"]["state"]);
        let body = json!({
            "type": "dialog_submission", "callback_id": dialog["dialog"]["callback_id"],
            "state": dialog["dialog"]["state"], "user_id": user.id, "channel_id": CHANNEL_ID,
            "team_id": "team0000000000000000000000",
            "submission": reason.map(|r| json!({"reason": r})).unwrap_or(json!({})),
            "cancelled": reason.is_none(),
        });
        let response = self
            .http
            .post(dialog["url"].as_str().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// A user reacts to a post, as the server broadcasts it.
    pub fn react(&self, user: &User, post_id: &str, emoji: &str) {
        let reaction = json!({"user_id": user.id, "post_id": post_id, "emoji_name": emoji, "create_at": now_ms()});
        self.inner.lock().unwrap().reactions.push(reaction.clone());
        self.broadcast("reaction_added", json!({"reaction": reaction.to_string()}));
    }

    /// A user replies in a post's thread, as the server broadcasts it.
    pub fn reply(&self, user: &User, root_id: &str, message: &str) {
        let post = json!({"id": self.new_id(), "user_id": user.id, "channel_id": CHANNEL_ID, "root_id": root_id,
                          "message": message, "create_at": now_ms()});
        self.broadcast("posted", json!({"post": post.to_string(), "channel_name": CHANNEL_NAME, "sender_name": format!("@{}", user.username)}));
    }

    /// A user acknowledges a post, as the server broadcasts it.
    pub fn acknowledge(&self, user: &User, post_id: &str) {
        let ack = json!({"user_id": user.id, "post_id": post_id, "acknowledged_at": now_ms()});
        self.broadcast(
            "post_acknowledgement_added",
            json!({"acknowledgement": ack.to_string()}),
        );
    }

    fn broadcast(&self, event: &str, data: Value) {
        let _ = self.events.send(json!({"event": event, "data": data,
            "broadcast": {"omit_users": null, "user_id": "", "channel_id": CHANNEL_ID, "team_id": ""}, "seq": 0}));
    }

    /// Whether the websocket has a listener (the gateway connected).
    pub fn websocket_listeners(&self) -> usize {
        self.events.receiver_count()
    }
}

pub fn now_ms() -> i64 {
    countersign::timestamp::now_ms()
}

/// The server's `update` semantics: the message is always replaced; props `null` keeps them,
/// `{}` clears all but the retain keys, an object replaces them (retain keys kept).
fn apply_update(post: &mut Value, update: &Value) {
    post["message"] = update.get("message").cloned().unwrap_or(json!(""));
    match update.get("props") {
        None | Some(Value::Null) => {}
        Some(Value::Object(props)) => {
            let mut next = props.clone();
            for key in RETAIN_PROP_KEYS {
                if let Some(v) = post["props"].get(key) {
                    next.insert(key.into(), v.clone());
                }
            }
            post["props"] = Value::Object(next);
        }
        Some(other) => panic!("update.props must be an object or null, got {other}"),
    }
}

/// A post as the server serializes it to clients: integrations stripped.
fn stripped(post: &Value) -> Value {
    let mut post = post.clone();
    if let Some(attachments) = post["props"]["attachments"].as_array_mut() {
        for attachment in attachments {
            if let Some(actions) = attachment["actions"].as_array_mut() {
                for action in actions {
                    action.as_object_mut().map(|a| a.remove("integration"));
                }
            }
        }
    }
    post
}

/// The model rules for attachments and actions (`integration_action.go`), which the spec's
/// `MessageAttachment` schema does not describe.
fn attachment_problems(props: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(attachments) = props.get("attachments") else {
        return problems;
    };
    let Some(attachments) = attachments.as_array() else {
        return vec!["props.attachments must be a list".into()];
    };
    for attachment in attachments {
        for action in attachment["actions"].as_array().into_iter().flatten() {
            let id = action["id"].as_str().unwrap_or_default();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                problems.push(format!(
                    "action id {id:?} must be letters and digits (the click route is [A-Za-z0-9]+)"
                ));
            }
            if !matches!(action["type"].as_str(), Some("button" | "select")) {
                problems.push(format!(
                    "action type {} must be button or select",
                    action["type"]
                ));
            }
            if action["name"].as_str().is_none_or(str::is_empty) {
                problems.push("action name is required".into());
            }
            let style = action["style"].as_str().unwrap_or("default");
            if !matches!(
                style,
                "default" | "primary" | "success" | "good" | "warning" | "danger"
            ) && !style.starts_with('#')
            {
                problems.push(format!("action style {style:?} is not allowed"));
            }
            let url = action["integration"]["url"].as_str().unwrap_or_default();
            if !(url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("/plugins/"))
            {
                problems.push(format!(
                    "integration url {url:?} must be http(s) or /plugins/"
                ));
            }
        }
    }
    problems
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"id": "stub.error", "message": message, "status_code": status.as_u16()})),
    )
        .into_response()
}

/// The endpoints served without a session: the trigger_id is the credential for dialogs.
const SESSIONLESS: [&str; 4] = [
    "/api/v4/config/client",
    "/api/v4/license/client",
    "/api/v4/system/ping",
    "/api/v4/actions/dialogs/open",
];

/// In front of every REST call: logs it, answers 503 while "down", checks it against the
/// contract (400 and a violation if it breaks it), and checks the bot's session.
async fn gate(State(stub): S, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if path == "/api/v4/websocket" {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let method = parts.method.clone();
    stub.inner
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {path}"));
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return error(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let json = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                stub.violation(format!("{method} {path}: the body is not JSON: {e}"));
                return error(StatusCode::BAD_REQUEST, "invalid JSON");
            }
        }
    };
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    if stub.down.load(Ordering::Relaxed) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "stub is down");
    }
    if !stub.check(method, &path, &query, json.as_ref()) {
        return error(StatusCode::BAD_REQUEST, "request breaks the API contract");
    }
    if !SESSIONLESS.contains(&path.as_str()) && !stub.authorized(&parts.headers) {
        return error(StatusCode::UNAUTHORIZED, "invalid or expired session");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

async fn create_post(State(stub): S, Json(body): Json<Value>) -> Response {
    let arrived = std::time::Instant::now();
    if stub.fail_posts.load(Ordering::Relaxed) > 0 {
        stub.fail_posts.fetch_sub(1, Ordering::Relaxed);
        return error(StatusCode::SERVICE_UNAVAILABLE, "scripted failure");
    }
    let problems = attachment_problems(&body["props"]);
    if !problems.is_empty() {
        for p in &problems {
            stub.violation(format!("CreatePost: {p}"));
        }
        return error(StatusCode::BAD_REQUEST, &problems.join("; "));
    }
    if body["metadata"]["priority"]["requested_ack"] == true
        && !stub.licensed.load(Ordering::Relaxed)
    {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "post priority needs a Professional licence",
        );
    }
    let id = stub.new_id();
    let post = json!({
        "id": id, "create_at": now_ms(), "update_at": now_ms(), "edit_at": 0, "delete_at": 0,
        "user_id": BOT_ID, "channel_id": body["channel_id"], "root_id": body.get("root_id").cloned().unwrap_or(json!("")),
        "message": body["message"], "type": "", "props": body.get("props").cloned().unwrap_or(json!({})),
        "metadata": body.get("metadata").cloned().unwrap_or(json!({})),
    });
    {
        let mut inner = stub.inner.lock().unwrap();
        inner.posts.insert(id.clone(), post.clone());
        inner.post_arrivals.insert(id.clone(), arrived);
        inner.post_order.push(id);
    }
    let delay = stub.post_answer_delay_ms.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    (StatusCode::CREATED, Json(stripped(&post))).into_response()
}

async fn get_post(State(stub): S, Path(id): Path<String>) -> Response {
    match stub.inner.lock().unwrap().posts.get(&id) {
        Some(post) => Json(stripped(post)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such post"),
    }
}

async fn patch_post(State(stub): S, Path(id): Path<String>, Json(body): Json<Value>) -> Response {
    for p in attachment_problems(&body["props"]) {
        stub.violation(format!("PatchPost: {p}"));
    }
    let mut inner = stub.inner.lock().unwrap();
    let Some(post) = inner.posts.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "no such post");
    };
    if let Some(message) = body.get("message") {
        post["message"] = message.clone();
    }
    // `props` replaces the whole map.
    if let Some(props) = body.get("props") {
        post["props"] = props.clone();
    }
    post["edit_at"] = json!(now_ms());
    Json(stripped(post)).into_response()
}

async fn save_reaction(State(stub): S, Json(body): Json<Value>) -> Response {
    let mut reaction = body.clone();
    reaction["create_at"] = json!(now_ms());
    stub.inner.lock().unwrap().reactions.push(reaction.clone());
    stub.broadcast("reaction_added", json!({"reaction": reaction.to_string()}));
    // The server answers 200 here, although the spec says 201 (mattermost.md §4.9).
    Json(reaction).into_response()
}

fn channel() -> Value {
    json!({"id": CHANNEL_ID, "name": CHANNEL_NAME, "display_name": "MCP approvals", "team_id": "team0000000000000000000000", "type": "O"})
}

async fn get_channel(Path(id): Path<String>) -> Response {
    if id == CHANNEL_ID {
        Json(channel()).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such channel")
    }
}

async fn channel_by_name(Path((team, name)): Path<(String, String)>) -> Response {
    if team == TEAM && name == CHANNEL_NAME {
        Json(channel()).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such channel")
    }
}

async fn channel_members(State(stub): S, Path(id): Path<String>) -> Response {
    let members: Vec<Value> = stub.inner.lock().unwrap().members.iter().map(|u| json!({
        "channel_id": id, "user_id": u.id, "roles": "channel_user", "last_viewed_at": 0, "msg_count": 0,
        "mention_count": 0, "last_update_at": now_ms(),
    })).collect();
    Json(members).into_response()
}

/// The server requires `format=old` here, although the spec does not list it.
fn without_old_format(query: &HashMap<String, String>) -> Option<Response> {
    (query.get("format").map(String::as_str) != Some("old"))
        .then(|| error(StatusCode::NOT_IMPLEMENTED, "format must be old"))
}

async fn client_config(State(stub): S, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(refused) = without_old_format(&q) {
        return refused;
    }
    let mut config = json!({"Version": "11.0.0", "SiteURL": stub.url});
    if stub.publishes_key.load(Ordering::Relaxed) {
        config["AsymmetricSigningPublicKey"] = json!(stub.public_key_b64());
    }
    Json(config).into_response()
}

async fn client_license(State(stub): S, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(refused) = without_old_format(&q) {
        return refused;
    }
    let licensed = stub.licensed.load(Ordering::Relaxed);
    Json(json!({"IsLicensed": if licensed { "true" } else { "false" }})).into_response()
}

async fn get_user(State(stub): S, Path(id): Path<String>) -> Response {
    if id == "me" || id == BOT_ID {
        return Json(json!({"id": BOT_ID, "username": "countersign", "is_bot": true}))
            .into_response();
    }
    let known = stub
        .inner
        .lock()
        .unwrap()
        .members
        .iter()
        .find(|u| u.id == id)
        .cloned();
    match known {
        Some(u) => {
            Json(json!({"id": u.id, "username": u.username, "is_bot": false})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such user"),
    }
}

/// `POST /users/usernames`: the users found, in no promised order; unknown names are left out
/// (`getUsersByNames` in the server).
async fn users_by_usernames(State(stub): S, Json(names): Json<Vec<String>>) -> Response {
    if names.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid usernames");
    }
    let inner = stub.inner.lock().unwrap();
    let found: Vec<Value> = inner
        .members
        .iter()
        .filter(|u| names.contains(&u.username))
        .map(|u| json!({"id": u.id, "username": u.username, "is_bot": false}))
        .collect();
    Json(found).into_response()
}

async fn user_by_username(State(stub): S, Path(name): Path<String>) -> Response {
    let inner = stub.inner.lock().unwrap();
    match inner.members.iter().find(|u| u.username == name) {
        Some(u) => {
            Json(json!({"id": u.id, "username": u.username, "is_bot": false})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such user"),
    }
}

async fn ping() -> Response {
    Json(json!({"status": "OK"})).into_response()
}

/// Opens a dialog if the trigger_id is the stub's own and at most 30 s old.
async fn open_dialog(State(stub): S, Json(body): Json<Value>) -> Response {
    let trigger = body["trigger_id"].as_str().unwrap_or_default();
    let Some(at_ms) = verify_own_trigger(&stub, trigger) else {
        return error(StatusCode::BAD_REQUEST, "invalid trigger_id");
    };
    if at_ms < now_ms() - 30_000 {
        return error(StatusCode::BAD_REQUEST, "trigger_id expired");
    }
    let title = body["dialog"]["title"].as_str().unwrap_or_default();
    if title.chars().count() > 24 {
        stub.violation(format!(
            "OpenInteractiveDialog: title {title:?} is longer than 24 characters"
        ));
    }
    stub.inner.lock().unwrap().dialogs.push(body);
    Json(json!({})).into_response()
}

fn verify_own_trigger(stub: &Stub, trigger: &str) -> Option<i64> {
    use p256::ecdsa::signature::Verifier as _;
    let raw = String::from_utf8(B64.decode(trigger).ok()?).ok()?;
    let parts: Vec<&str> = raw.splitn(4, ':').collect();
    let signed = format!("{}:{}:{}:", parts.first()?, parts.get(1)?, parts.get(2)?);
    let sig = p256::ecdsa::DerSignature::from_bytes(&B64.decode(parts.get(3)?).ok()?).ok()?;
    stub.key
        .verifying_key()
        .verify(signed.as_bytes(), &sig)
        .ok()?;
    parts[2].parse().ok()
}

async fn websocket(State(stub): S, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_websocket(stub, socket))
}

/// The authentication challenge, `hello`, then every broadcast event.
async fn serve_websocket(stub: Arc<Stub>, mut socket: WebSocket) {
    let Some(Ok(Message::Text(first))) = socket.recv().await else {
        return;
    };
    let challenge: Value = serde_json::from_str(first.as_str()).unwrap_or_default();
    if challenge["action"] != "authentication_challenge" || challenge["data"]["token"] != BOT_TOKEN
    {
        stub.violation(format!(
            "websocket: expected an authentication challenge with the bot token, got {challenge}"
        ));
        return;
    }
    let mut events = stub.events.subscribe();
    let ok = json!({"status": "OK", "seq_reply": challenge["seq"]});
    let hello = json!({"event": "hello", "data": {"server_version": "11.0.0"}, "broadcast": {"user_id": BOT_ID}, "seq": 0});
    for message in [ok, hello] {
        if socket
            .send(Message::Text(message.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut seq = 1;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Ok(mut event) = event else { return };
                event["seq"] = json!(seq);
                seq += 1;
                if socket.send(Message::Text(event.to_string().into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => {
                if !matches!(incoming, Some(Ok(_))) {
                    return;
                }
            }
        }
    }
}
