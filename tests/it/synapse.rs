//! A real Synapse for the Matrix tests: installed by `tests/peers/setup.sh` into
//! `.peers/synapse-venv`, started once per test binary with an in-memory configuration on a
//! free loopback port, and stopped by its pid when the binary exits (`tests/peers/synapse/run.py`
//! watches its parent). Each test registers its own users and creates its own room.

use crate::support;
use crate::wait;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest Synapse may take to answer `/health` after it was started.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a card takes to show (or change) at most, and how often Synapse is asked.
const TEN_S: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
const SHARED_SECRET: &str = "countersign-test-shared-secret";

/// The shared homeserver.
pub struct Synapse {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub pid: u32,
    /// Milliseconds from spawning it to its first healthy answer.
    pub ready_after_ms: u128,
    _dir: tempfile::TempDir,
    _child: std::process::Child,
}

static SYNAPSE: OnceLock<Synapse> = OnceLock::new();

/// The shared Synapse, started on first use.
pub fn synapse() -> &'static Synapse {
    SYNAPSE.get_or_init(start)
}

fn python() -> PathBuf {
    let python = support::root().join(".peers/synapse-venv/bin/python");
    assert!(
        python.exists(),
        "Synapse is not installed (no {}): run `bash tests/peers/setup.sh` first",
        python.display()
    );
    python
}

fn start() -> Synapse {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let template = support::root().join("tests/peers/synapse");
    let fill = |name: &str| {
        let text = std::fs::read_to_string(template.join(name)).unwrap();
        let text = text
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@PORT@", &port.to_string());
        std::fs::write(dir.path().join(name), text).unwrap();
    };
    fill("homeserver.yaml");
    fill("log.config");
    std::fs::write(dir.path().join("localhost.signing.key"), signing_key()).unwrap();
    let log = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
    let started = Instant::now();
    let child = std::process::Command::new(python)
        .arg(template.join("run.py"))
        .arg(dir.path().join("homeserver.yaml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start Synapse");
    let pid = child.id();
    let what = format!(
        "Synapse to answer /health (see {})",
        dir.path().join("homeserver.log").display()
    );
    let every = Duration::from_millis(50);
    wait::eventually_blocking(&what, START_LIMIT, every, || healthy(port).then_some(()));
    let ready_after_ms = started.elapsed().as_millis();
    eprintln!("synapse: pid {pid}, port {port}, ready after {ready_after_ms} ms");
    Synapse {
        url: format!("http://127.0.0.1:{port}"),
        pid,
        ready_after_ms,
        _dir: dir,
        _child: child,
    }
}

/// A fresh ed25519 signing key in Synapse's key file format (saves a `--generate-keys` run).
fn signing_key() -> String {
    use base64::Engine;
    let seed: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|u| u.into_bytes())
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed);
    format!("ed25519 a_test {encoded}\n")
}

/// `GET /health` answers `OK` (a blocking probe: the harness starts outside any runtime).
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// A registered user, acting through the client-server API.
#[derive(Clone)]
pub struct MatrixUser {
    pub id: String,
    pub token: String,
    http: reqwest::Client,
    base: String,
}

/// A unique suffix, so tests sharing the homeserver never share users or rooms.
pub fn unique(name: &str) -> String {
    format!(
        "{name}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

impl Synapse {
    /// Registers `username` through the shared-secret admin API.
    pub async fn register(&self, username: &str) -> MatrixUser {
        let http = crate::support::http();
        let endpoint = format!("{}/_synapse/admin/v1/register", self.url);
        let nonce: Value = http
            .get(&endpoint)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let nonce = nonce["nonce"].as_str().unwrap();
        let password = format!("pw-{username}");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).unwrap();
        mac.update(format!("{nonce}\0{username}\0{password}\0notadmin").as_bytes());
        let body = json!({"nonce": nonce, "username": username, "password": password,
            "admin": false, "mac": hex::encode(mac.finalize().into_bytes())});
        let registered: Value = http
            .post(&endpoint)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        MatrixUser {
            id: registered["user_id"]
                .as_str()
                .expect("registered")
                .to_owned(),
            token: registered["access_token"].as_str().unwrap().to_owned(),
            http,
            base: self.url.clone(),
        }
    }
}

impl MatrixUser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/_matrix/client/v3{path}", self.base))
            .timeout(Duration::from_secs(20))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// A private, non-federated room with `invite`d users; returns its id.
    pub async fn create_room(&self, invite: &[&MatrixUser], encrypted: bool) -> String {
        let mut body = json!({"preset": "private_chat", "name": "approvals",
            "invite": invite.iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
            "creation_content": {"m.federate": false}});
        if encrypted {
            body["initial_state"] = json!([{"type": "m.room.encryption", "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]);
        }
        let created = self
            .call(reqwest::Method::POST, "/createRoom", Some(body))
            .await;
        created["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn join(&self, room: &str) {
        let path = format!("/join/{}", enc(room));
        self.call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    async fn send(&self, room: &str, kind: &str, content: Value) -> String {
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let path = format!("/rooms/{}/send/{kind}/{txn}", enc(room));
        let sent = self.call(reqwest::Method::PUT, &path, Some(content)).await;
        sent["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn react(&self, room: &str, event: &str, key: &str) -> String {
        let content =
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event, "key": key}});
        self.send(room, "m.reaction", content).await
    }

    /// A plain message.
    pub async fn say(&self, room: &str, body: &str) -> String {
        let content = json!({"msgtype": "m.text", "body": body});
        self.send(room, "m.room.message", content).await
    }

    /// A rich reply (`m.in_reply_to`) to `event`.
    pub async fn reply(&self, room: &str, event: &str, body: &str) -> String {
        let content = json!({"msgtype": "m.text", "body": body,
            "m.relates_to": {"m.in_reply_to": {"event_id": event}}});
        self.send(room, "m.room.message", content).await
    }

    /// A reply in the thread of `root`, as Element sends it: `m.thread` to the root, with a
    /// reply fallback (`is_falling_back`) to the thread's `latest` event, which need not be the
    /// root once others have posted in the thread.
    pub async fn thread_reply(&self, room: &str, root: &str, latest: &str, body: &str) -> String {
        let content = json!({"msgtype": "m.text", "body": body,
            "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                             "m.in_reply_to": {"event_id": latest}}});
        self.send(room, "m.room.message", content).await
    }

    /// Turns end-to-end encryption on in `room` (it cannot be turned off again).
    pub async fn enable_encryption(&self, room: &str) {
        let path = format!("/rooms/{}/state/m.room.encryption/", enc(room));
        let content = json!({"algorithm": "m.megolm.v1.aes-sha2"});
        self.call(reqwest::Method::PUT, &path, Some(content)).await;
    }

    pub async fn read_receipt(&self, room: &str, event: &str) {
        let path = format!("/rooms/{}/receipt/m.read/{}", enc(room), enc(event));
        self.call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    /// The room's latest events, newest first.
    pub async fn recent(&self, room: &str) -> Vec<Value> {
        let path = format!("/rooms/{}/messages?dir=b&limit=100", enc(room));
        let page = self.call(reqwest::Method::GET, &path, None).await;
        page["chunk"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (bounded) for the card of `approval` in `room`; returns its event id.
    pub async fn card(&self, room: &str, approval: &str) -> String {
        let what = format!("a card for approval {approval} in {room}");
        let card = wait::eventually_every(&what, TEN_S, POLL, || async move {
            self.recent(room).await.into_iter().find(|e| {
                e["content"]["org.countersign.approval"]["approval_id"] == approval
                    && e["content"]["m.relates_to"].is_null()
            })
        })
        .await;
        card["event_id"].as_str().unwrap().to_owned()
    }

    /// The card's text as it now reads: the body of its latest edit, or its own.
    pub async fn card_text(&self, room: &str, card: &str) -> String {
        let events = self.recent(room).await;
        let latest_edit = events.iter().find(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == card
        });
        let original = events.iter().find(|e| e["event_id"] == card);
        latest_edit
            .map(|e| &e["content"]["m.new_content"]["body"])
            .or(original.map(|e| &e["content"]["body"]))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (bounded) until the card's text contains `needle`; returns the text.
    pub async fn card_text_with(&self, room: &str, card: &str, needle: &str) -> String {
        let what = format!("the card to say {needle:?}");
        wait::eventually_every(&what, TEN_S, POLL, || async move {
            let text = self.card_text(room, card).await;
            if text.contains(needle) {
                Ok(text)
            } else {
                Err(format!("it reads:\n{text}"))
            }
        })
        .await
    }

    /// Events in `room` relating to `event` (reactions, replies, edits), oldest first.
    pub async fn relations(&self, room: &str, event: &str) -> Vec<Value> {
        let mut related: Vec<Value> = self
            .recent(room)
            .await
            .into_iter()
            .filter(|e| {
                let relates = &e["content"]["m.relates_to"];
                relates["event_id"] == event || relates["m.in_reply_to"]["event_id"] == event
            })
            .collect();
        related.reverse();
        related
    }
}

/// One URL path segment (room and event ids contain `!`, `$`, `:`).
fn enc(segment: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").unwrap();
    url.path_segments_mut().unwrap().push(segment);
    url.path()[1..].to_owned()
}
