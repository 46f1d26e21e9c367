//! `https://` upstreams and chat servers: a TLS front (a test CA's certificate for `localhost`)
//! before plain servers, trusted through `tls.ca_files` or not at all.

use crate::app::{Agent, Client, TestApp, TestAppBuilder, Upstream};
use crate::chat_gateway as cg;
use crate::mattermost::stub::{BOT_TOKEN, Stub, User};
use crate::support::{self, modern_meta, post};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Terminates TLS on a loopback port and forwards the bytes to a plain server.
struct TlsFront {
    /// `localhost:PORT`, the name the certificate is for.
    authority: String,
    /// The test CA that signed the certificate, as a PEM file.
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    async fn before(target: SocketAddr) -> TlsFront {
        countersign::tls::install_provider();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Countersign test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("test-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return; // a client that refused the certificate
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            authority: format!("localhost:{port}"),
            ca_file,
            _dir: dir,
            task,
        }
    }
}

fn stub_addr(stub: &Stub) -> SocketAddr {
    stub.url.trim_start_matches("http://").parse().unwrap()
}

/// A plain proxy that lets anonymous agents in.
fn anonymous_proxy() -> TestAppBuilder {
    TestApp::builder().plain_proxy().agents(Vec::<Agent>::new())
}

/// A modern `tools/call` without credentials (the gateways here allow anonymous agents).
async fn anonymous_call(gw: &Client, tool: &str, arguments: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":tool,"arguments":arguments,"_meta":modern_meta()}});
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", tool),
    ];
    post(&gw.url, &headers, &body)
        .await
        .messages()
        .pop()
        .expect("a response")
}

async fn health(gw: &Client) -> Value {
    let response = support::http()
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_used_only_when_its_ca_is_trusted() {
    // The upstream: a gateway over the echo server, reached through the TLS front.
    let inner = anonymous_proxy().spawn().await;
    let front = TlsFront::before(inner.gateway().addr).await;
    let outer = || {
        let url = format!("https://{}/mcp", front.authority);
        anonymous_proxy().upstreams(vec![("web", Upstream::Http { url })])
    };
    let trusting = outer().trust_ca(&front.ca_file).spawn().await;
    assert_eq!(health(&trusting).await["upstreams"]["web"], "up");
    let answer = anonymous_call(&trusting, "web__echo__echo", json!({"message": "over tls"})).await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "over tls",
        "{answer}"
    );

    // The same upstream without its CA: the certificate is refused, nothing is sent.
    let untrusting = outer().spawn().await;
    assert_eq!(health(&untrusting).await["upstreams"]["web"], "down");
    let refused = anonymous_call(&untrusting, "web__echo__echo", json!({"message": "x"})).await;
    assert!(
        refused.get("error").is_some() || refused["result"]["isError"] == true,
        "{refused}"
    );
}

/// The chat tests' app, its approvers on Mattermost, with Mattermost in reactions mode behind
/// `front`: REST over https and the websocket over wss.
fn over_tls(front: &TlsFront) -> TestAppBuilder {
    let mattermost = json!({"url": format!("https://{}", front.authority), "token": BOT_TOKEN,
                            "channel": "eng/mcp-approvals", "mode": "reactions"});
    cg::builder()
        .approvers(cg::approvers_on("mattermost", |who| who.to_owned()))
        .set("chat.mattermost", mattermost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_over_https_and_wss_decides_by_reaction() {
    let members = cg::APPROVERS.iter().map(|who| User::named(who)).collect();
    let stub = Stub::start(members).await;
    let front = TlsFront::before(stub_addr(&stub)).await;
    let app = over_tls(&front).trust_ca(&front.ca_file).spawn().await;
    support::until("the gateway listens over wss", || {
        stub.websocket_listeners() >= 1
    })
    .await;
    let (agent, _approval) = app.held_record("one-tls").await;
    support::until("the card is posted over https", || !stub.cards().is_empty()).await;
    let card = &stub.cards()[0];
    stub.react(
        &User::named("bob"),
        card["id"].as_str().unwrap(),
        "white_check_mark",
    );
    assert_eq!(agent.answer().await.text(), "deleted one-tls");
    assert_eq!(stub.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_chat_server_gets_no_card_and_chat_test_says_why() {
    let members = cg::APPROVERS.iter().map(|who| User::named(who)).collect();
    let stub = Stub::start(members).await;
    let front = TlsFront::before(stub_addr(&stub)).await;
    let untrusted = over_tls(&front).spawn_stopped().await;
    let (ok, out) = untrusted.chat_test("mattermost", &[]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL")
            && out.contains("invalid peer certificate: UnknownIssuer")
            && out.contains("tls.ca_files"),
        "the failed check names the certificate problem:\n{out}"
    );
    let trusted = over_tls(&front)
        .trust_ca(&front.ca_file)
        .spawn_stopped()
        .await;
    let (ok, out) = trusted.chat_test("mattermost", &[]).await;
    assert!(ok, "trusting the CA, every check passes:\n{out}");

    let app = over_tls(&front).spawn().await;
    let (agent, _approval) = app.held_record("fast-tls").await;
    let answer = agent.answer().await;
    let answer = answer.text();
    assert!(
        answer.contains("no approver could be asked") && answer.contains("UnknownIssuer"),
        "fails closed, saying why: {answer}"
    );
    assert!(stub.cards().is_empty(), "nothing reached the server");
}
