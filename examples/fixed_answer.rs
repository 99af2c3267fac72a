//! The baseline of the load benchmark: a minimal rustls + hyper server that reads the body and
//! returns one fixed AdmissionReview answer, with the same TLS, ALPN and HTTP stack as the
//! webhook. The webhook's overhead is measured against it (benches/load.sh).
//!
//! With `--parse` it also parses the body with serde_json (`IgnoredAny`) before answering: the
//! least any server that reads the review must do, so the ceiling of the webhook's ratio.
//!
//! `cargo run --release --example fixed_answer -- 127.0.0.1:9443 cert.pem key.pem [--parse]`

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pullsecret_injector::tls::{self, CertResolver};
use serde::de::IgnoredAny;

const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(cert), Some(key)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: fixed_answer ADDR CERT KEY [--parse]");
    };
    let parse = args.next().as_deref() == Some("--parse");
    let pair = tls::load_files(cert.as_ref(), key.as_ref())?;
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(Arc::new(CertResolver::new(pair)))?);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("fixed_answer listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(
                move |request: Request<hyper::body::Incoming>| async move {
                    let body = request.into_body().collect().await;
                    if parse && let Ok(body) = body {
                        let body = body.to_bytes();
                        let _ = std::hint::black_box(serde_json::from_slice::<IgnoredAny>(&body));
                    }
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(ANSWER)))
                            .unwrap_or_default(),
                    )
                },
            );
            // The protocol ALPN agreed on, as the webhook does.
            let _ = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await
            } else {
                http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await
            };
        });
    }
}
