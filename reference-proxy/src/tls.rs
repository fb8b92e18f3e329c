//! Postgres TLS, both ends, on BoringSSL (`tokio-boring`).
//!
//! Postgres does not start TLS on connect: the client sends SSLRequest and the server answers
//! one byte, `S` (start the handshake) or `N`. [`negotiate_origin_tls`] does that dance toward
//! the origin with libpq's `sslmode` semantics; [`ClientTls`] is the proxy's own certificate for
//! clients that ask. Both work over any [`BoxedStream`], so TLS also runs *inside* a WebSocket
//! tunnel.

use crate::config::{OriginConfig, SslMode};
use crate::stream::BoxedStream;
use boring::hash::MessageDigest;
use boring::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use boring::x509::X509;
use elephant_protocol::FrontendMessage;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Key-exchange groups offered to the origin, in order (see `build_connector`).
pub const ORIGIN_TLS_GROUPS: &str = "X25519:P-256:P-384";

/// Why TLS could not be set up; messages name the file or the check that failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be loaded.
    #[error("cannot load {what} from {path}: {detail}")]
    Load {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// BoringSSL's reason.
        detail: String,
    },
    /// BoringSSL could not be configured.
    #[error("TLS setup failed: {0}")]
    Setup(String),
    /// The origin answered `N` to SSLRequest while the sslmode requires TLS.
    #[error("server does not support SSL, but SSL was required (sslmode={0})")]
    ServerRefusedTls(&'static str),
    /// The origin answered SSLRequest with something other than `S` or `N`.
    #[error("received invalid response to SSL negotiation: {0:#04x}")]
    InvalidResponse(u8),
    /// The TLS handshake failed (certificate verification, protocol mismatch, ...).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The connection failed during negotiation.
    #[error("I/O error during SSL negotiation: {0}")]
    Io(#[from] std::io::Error),
}

fn load_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(boring::error::ErrorStack) -> TlsError {
    let path = path.to_path_buf();
    move |error| TlsError::Load {
        what,
        path,
        detail: error.to_string(),
    }
}

/// The `tls-server-end-point` channel-binding data of a certificate (RFC 5929): its hash with
/// the signature algorithm's digest, SHA-256 when that is MD5 or SHA-1.
pub fn tls_server_end_point(certificate: &X509) -> Option<Vec<u8>> {
    let digest = certificate
        .signature_algorithm()
        .object()
        .nid()
        .signature_algorithms()
        .and_then(|algorithms| MessageDigest::from_nid(algorithms.digest))
        .filter(|digest| digest.size() >= 32)
        .unwrap_or_else(MessageDigest::sha256);
    certificate.digest(digest).ok().map(|bytes| bytes.to_vec())
}

/// A server-side acceptor (Mozilla's intermediate profile, no ALPN) from a PEM certificate
/// chain and its private key; shared by the proxy's client TLS and the tunnel edge.
pub fn server_acceptor(cert: &Path, key: &Path) -> Result<SslAcceptor, TlsError> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    builder
        .set_certificate_chain_file(cert)
        .map_err(load_error("certificate", cert))?;
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(load_error("private key", key))?;
    builder.check_private_key().map_err(load_error(
        "private key (does not match the certificate)",
        key,
    ))?;
    Ok(builder.build())
}

/// The proxy's TLS for its own clients.
#[derive(Clone)]
pub struct ClientTls {
    acceptor: SslAcceptor,
    end_point: Option<Vec<u8>>,
}

impl ClientTls {
    /// Loads a PEM certificate chain and private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let acceptor = server_acceptor(cert, key)?;
        let pem = std::fs::read(cert).map_err(|e| TlsError::Load {
            what: "certificate",
            path: cert.to_path_buf(),
            detail: e.to_string(),
        })?;
        let end_point = X509::from_pem(&pem)
            .ok()
            .as_ref()
            .and_then(tls_server_end_point);
        Ok(ClientTls {
            acceptor,
            end_point,
        })
    }

    /// Runs the server side of the handshake on a client stream.
    pub async fn accept(&self, stream: BoxedStream) -> Result<BoxedStream, TlsError> {
        let tls = tokio_boring::accept(&self.acceptor, stream)
            .await
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        Ok(Box::new(tls))
    }

    /// Channel-binding data for SCRAM-SHA-256-PLUS on connections this acceptor serves.
    pub fn tls_server_end_point(&self) -> Option<Vec<u8>> {
        self.end_point.clone()
    }
}

/// How to secure connections to the origin (libpq's `sslmode`, `sslrootcert`, `sslcert`,
/// `sslkey`).
#[derive(Clone)]
pub struct OriginTls {
    mode: SslMode,
    connector: Option<SslConnector>,
    verify_hostname: bool,
    server_name: String,
}

impl OriginTls {
    /// Builds the origin TLS settings from the origin configuration.
    pub fn from_origin(origin: &OriginConfig) -> Result<Self, TlsError> {
        let client_cert = origin.sslcert.as_deref().zip(origin.sslkey.as_deref());
        let connector = match origin.sslmode {
            SslMode::Disable | SslMode::Allow => None,
            _ => Some(build_connector(
                origin.verifies_certificate(),
                origin.sslrootcert.as_deref(),
                client_cert,
            )?),
        };
        Ok(OriginTls {
            mode: origin.sslmode,
            connector,
            verify_hostname: origin.sslmode.verifies_hostname(),
            server_name: origin.host.clone(),
        })
    }

    /// No TLS at all (the simulator's origin).
    pub fn disabled() -> Self {
        OriginTls {
            mode: SslMode::Disable,
            connector: None,
            verify_hostname: false,
            server_name: String::new(),
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> SslMode {
        self.mode
    }
}

fn build_connector(
    verify: bool,
    root_cert: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<SslConnector, TlsError> {
    let mut builder =
        SslConnector::builder(SslMethod::tls()).map_err(|e| TlsError::Setup(e.to_string()))?;
    // Offer X25519 first: BoringSSL's default first key share (a post-quantum hybrid) is
    // unknown to the OpenSSL of today's Postgres packages, which answers with a
    // HelloRetryRequest and costs every new origin connection one extra round trip.
    builder
        .set_curves_list(ORIGIN_TLS_GROUPS)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    if verify {
        match root_cert {
            Some(path) => builder
                .set_ca_file(path)
                .map_err(load_error("root certificate (sslrootcert)", path))?,
            None => builder
                .set_default_verify_paths()
                .map_err(|e| TlsError::Setup(e.to_string()))?,
        }
        builder.set_verify(SslVerifyMode::PEER);
    } else {
        builder.set_verify(SslVerifyMode::NONE);
    }
    if let Some((cert, key)) = client_cert {
        builder
            .set_certificate_chain_file(cert)
            .map_err(load_error("client certificate (sslcert)", cert))?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(load_error("client key (sslkey)", key))?;
    }
    Ok(builder.build())
}

/// Sends SSLRequest (unless TLS is disabled) and returns the stream to speak Postgres on: TLS
/// when the server agreed, the original stream when it refused and the mode allows that.
pub async fn negotiate_origin_tls(
    tls: &OriginTls,
    mut stream: BoxedStream,
) -> Result<BoxedStream, TlsError> {
    let Some(connector) = &tls.connector else {
        return Ok(stream);
    };
    let mut request = bytes::BytesMut::new();
    FrontendMessage::SslRequest
        .encode(&mut request)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    stream.write_all(&request).await?;
    stream.flush().await?;
    match stream.read_u8().await? {
        b'S' => {}
        b'N' if tls.mode == SslMode::Prefer => return Ok(stream),
        b'N' => return Err(TlsError::ServerRefusedTls(tls.mode.as_str())),
        other => return Err(TlsError::InvalidResponse(other)),
    }
    let mut config = connector
        .configure()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    config.set_verify_hostname(tls.verify_hostname);
    let server_name = tls
        .server_name
        .trim_start_matches('[')
        .trim_end_matches(']');
    let secured = tokio_boring::connect(config, server_name, stream)
        .await
        .map_err(|e| TlsError::Handshake(describe_handshake_error(&e, server_name)))?;
    Ok(Box::new(secured))
}

/// Words a handshake failure for the user: which check failed, and for a name mismatch,
/// which name the certificate had to carry.
fn describe_handshake_error<S>(
    error: &tokio_boring::HandshakeError<S>,
    server_name: &str,
) -> String {
    let verify = error.ssl().and_then(|ssl| ssl.verify_result().err()).map(|failure| {
        let reason = failure.error_string();
        if reason.contains("mismatch") {
            format!("certificate verify failed: {reason} (the origin's certificate is not valid for \"{server_name}\"; connect by a name it lists, or use sslmode=verify-ca)")
        } else {
            format!("certificate verify failed: {reason}")
        }
    });
    verify.unwrap_or_else(|| error.to_string())
}
