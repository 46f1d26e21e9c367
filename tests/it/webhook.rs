//! The signed webhook: another system is told about pending approvals, decisions and finished
//! calls, and decides through the approver HTTP API.

use crate::app::{Approver, TestApp};
use crate::chat_gateway as cg;
use crate::wait;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "test-webhook-secret";

type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on a free loopback port answering `status`; returns its URL and what it got.
async fn receiver(status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// The chat tests' policy and approvers (none with a chat account), telling the webhook at
/// `url`.
async fn spawn_app(url: &str) -> TestApp {
    TestApp::builder()
        .policy(cg::POLICY)
        .approvers(cg::APPROVERS.map(Approver::new).to_vec())
        .set("chat.webhook", json!({"url": url, "secret": SECRET}))
        .spawn()
        .await
}

/// Checks the signature as a receiver would (independently of the gateway's signer) and
/// returns the event body.
fn verified(headers: &HeaderMap, body: &str) -> Value {
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let timestamp = header("x-countersign-timestamp");
    let age = countersign::timestamp::now_ms() / 1000 - timestamp.parse::<i64>().unwrap();
    assert!((0..=300).contains(&age), "fresh timestamp");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("v1:{timestamp}:{body}").as_bytes());
    let given = header("x-countersign-signature");
    let given = hex::decode(given.strip_prefix("v1=").unwrap()).unwrap();
    mac.verify_slice(&given).expect("a valid signature");
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        header("x-countersign-event"),
        event["type"].as_str().unwrap()
    );
    event
}

async fn events(received: &Received, count: usize) -> Vec<Value> {
    let what = format!("{count} webhook deliveries");
    wait::eventually(&what, Duration::from_secs(5), || async move {
        let got: Vec<Value> = received
            .lock()
            .unwrap()
            .iter()
            .map(|(h, b)| verified(h, b))
            .collect();
        if got.len() >= count {
            Ok(got)
        } else {
            Err(format!("{} of them", got.len()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_hears_of_the_request_the_decision_and_the_call() {
    let (url, received) = receiver(StatusCode::OK).await;
    let app = spawn_app(&url).await;
    let (agent, approval) = app.held_record("one-w1").await;
    let id = approval.id.as_str();
    let requested = events(&received, 1).await.remove(0);
    assert_eq!(requested["type"], "approval.requested");
    assert_eq!(requested["approval"]["id"], id);
    assert_eq!(requested["approval"]["arguments"]["record_id"], "one-w1");
    let approve = requested["decide"]["approve"].as_str().unwrap();
    assert_eq!(approve, format!("/approvals/{id}/approve"));
    let (status, voted) = app.post(approve, "bob", None).await;
    assert_eq!(status, 200, "{voted}");
    assert_eq!(agent.answer().await.text(), "deleted one-w1");
    let all = events(&received, 3).await;
    let kinds: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["approval.requested", "approval.decided", "call.finished"]
    );
    assert_eq!(all[1]["approval"]["status"], "approved");
    assert_eq!(all[1]["approval"]["decided_by"], "bob");
    assert_eq!(all[2]["call"]["outcome"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_fails_the_call_closed() {
    let (url, received) = receiver(StatusCode::FORBIDDEN).await;
    let app = spawn_app(&url).await;
    let (agent, approval) = app.held_record("one-w2").await;
    let text = agent.answer().await.text().to_owned();
    assert!(
        text.contains("no approver could be asked") && text.contains("403"),
        "{text}"
    );
    assert_eq!(app.approval(&approval.id).await.status, "cancelled");
    assert_eq!(
        received.lock().unwrap().len(),
        2,
        "the request, then the cancellation"
    );
}

/// Item 6: an empty or short secret would let anyone forge the webhook's signatures; the
/// gateway refuses to start and names the key.
#[test]
fn an_empty_or_short_secret_is_refused_at_start() {
    let parse = |secret: &str| {
        let webhook = json!({"url": "http://127.0.0.1:9/hook", "secret": secret});
        let settings = TestApp::builder().set("chat.webhook", webhook);
        let unused = Path::new("unused");
        let yaml = settings.yaml("sqlite://unused.db", unused, unused, None);
        countersign::config::parse(&yaml, "countersign.yaml", &[])
    };
    assert!(parse(SECRET).is_ok());
    for secret in ["", "   ", "tooshort"] {
        let refused = parse(secret)
            .expect_err("a weak secret is refused")
            .to_string();
        assert!(
            refused.contains("chat.webhook.secret") && refused.contains("16"),
            "{refused}"
        );
    }
}
