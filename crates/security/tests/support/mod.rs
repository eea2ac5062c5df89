//! A real HTTPS server on 127.0.0.1 for the tests (custom auth server, TokenReview API,
//! OIDC/JWKS endpoints): rustls with a certificate made in the test, HTTP/1.1 with
//! Content-Length bodies, one task per connection, every request recorded.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgemq_tls::{CertificateAuthority, KeyAlgorithm, ServerCertSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const DAY: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, e.g. `/?api-version=0.5.0`.
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub struct Response {
    pub status: u16,
    pub body: String,
    /// Never answer (for timeout tests).
    pub hang: bool,
}

impl Response {
    pub fn json(status: u16, body: serde_json::Value) -> Response {
        Response {
            status,
            body: body.to_string(),
            hang: false,
        }
    }

    pub fn hang() -> Response {
        Response {
            status: 0,
            body: String::new(),
            hang: true,
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A test PKI: a CA and a server certificate for 127.0.0.1 / localhost.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub server_chain: String,
    pub server_key: String,
}

pub fn pki(name: &str) -> Pki {
    let ca = CertificateAuthority::generate_root(name, KeyAlgorithm::Ec256, DAY).unwrap();
    let leaf = ca
        .issue_server(&ServerCertSpec {
            common_name: "localhost".into(),
            dns: vec!["localhost".into()],
            ip: vec!["127.0.0.1".parse().unwrap()],
            algorithm: KeyAlgorithm::Ec256,
            validity: DAY,
            previous_key_pem: None,
        })
        .unwrap();
    Pki {
        ca,
        server_chain: leaf.chain_pem,
        server_key: leaf.key_pem,
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }
}

/// Serve HTTPS with `pki`'s server certificate. `client_ca`: require client certificates
/// signed by that CA (mTLS).
pub async fn serve(pki: &Pki, client_ca: Option<&str>, handler: Handler) -> Server {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certified =
        edgemq_tls::pem::certified_key(pki.server_chain.as_bytes(), pki.server_key.as_bytes())
            .unwrap();
    let slot = Arc::new(edgemq_tls::ServerCertSlot::new(certified));
    let verifier = client_ca.map(|pem| {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            edgemq_tls::provider(),
        )
        .build()
        .unwrap()
    });
    let config = edgemq_tls::server_config(slot, verifier);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Some(request) = read_request(&mut tls).await else {
                    return;
                };
                recorded.lock().unwrap().push(request.clone());
                let response = handler(&request);
                if response.hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                let text = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    response.status,
                    response.body.len(),
                    response.body
                );
                let _ = tls.write_all(text.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Server {
        addr,
        requests,
        task,
    }
}

async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}
