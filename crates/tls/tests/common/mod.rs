//! Real TLS over 127.0.0.1: an echo server built from `edgemq_tls::server_config` and
//! tokio-rustls clients.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgemq_tls::{IssuedCert, KeyAlgorithm, ServerCertSpec};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const DAY: Duration = Duration::from_secs(86_400);

pub fn spec(dns: &[&str], ip: &[&str], algorithm: KeyAlgorithm) -> ServerCertSpec {
    ServerCertSpec {
        common_name: dns.first().copied().unwrap_or("edgemq").to_string(),
        dns: dns.iter().map(|s| s.to_string()).collect(),
        ip: ip.iter().map(|s| s.parse().unwrap()).collect(),
        algorithm,
        validity: 90 * DAY,
        previous_key_pem: None,
    }
}

pub fn certified(issued: &IssuedCert) -> rustls::sign::CertifiedKey {
    issued.certified_key().unwrap()
}

/// An echo server on 127.0.0.1 (each TLS connection echoes until EOF); the task ends with
/// the test's runtime.
pub async fn serve(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake is the client's business in these tests.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            let _ = tls.flush().await;
                        }
                    }
                }
            });
        }
    });
    addr
}

pub fn roots(ca_pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in edgemq_tls::pem::parse_certificates(ca_pem.as_bytes()).unwrap() {
        roots.add(cert).unwrap();
    }
    roots
}

/// A client trusting `ca_pem`, for the given TLS versions. Resumption is off so every
/// handshake shows the certificate the server presents now.
pub fn client(ca_pem: &str, versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(edgemq_tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config
}

pub fn client_both(ca_pem: &str) -> ClientConfig {
    client(ca_pem, rustls::ALL_VERSIONS)
}

pub async fn connect(
    addr: SocketAddr,
    config: ClientConfig,
    name: &str,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let connect = TlsConnector::from(Arc::new(config)).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The rustls error a failed client handshake carries.
pub fn rustls_error(e: &std::io::Error) -> rustls::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a rustls error: {e:?}"))
}

pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Sends `msg` and expects it back.
pub async fn echo(tls: &mut TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    tls.flush().await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, msg);
}

pub fn leaf_der(issued: &IssuedCert) -> CertificateDer<'static> {
    edgemq_tls::pem::parse_certificates(issued.chain_pem.as_bytes()).unwrap()[0].clone()
}
