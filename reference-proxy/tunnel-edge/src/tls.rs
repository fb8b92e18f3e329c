//! TLS between the client and the edge.
//!
//! Why BoringSSL with Mozilla's intermediate profile and no ALPN: the `cloudflared` client always
//! speaks TLS to the edge (even for an `http://` hostname), offers no ALPN, and verifies the
//! certificate; the workspace already uses BoringSSL everywhere, so the same library terminates
//! it here. Plain mode (no [`EdgeTls`]) exists for the simulator, whose network has no TLS.

use crate::error::{HandshakeError, TlsSetupError};
use boring::ssl::{SslAcceptor, SslFiletype, SslMethod};
use reference_proxy::stream::BoxedStream;
use std::path::Path;

/// A TLS acceptor for the edge's clients.
#[derive(Clone)]
pub struct EdgeTls {
    acceptor: SslAcceptor,
}

impl std::fmt::Debug for EdgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeTls").finish_non_exhaustive()
    }
}

impl EdgeTls {
    /// Loads a PEM certificate chain and its private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsSetupError> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .map_err(|e| TlsSetupError::Setup(e.to_string()))?;
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
        Ok(EdgeTls {
            acceptor: builder.build(),
        })
    }

    /// Wraps an acceptor built elsewhere (it should offer no ALPN, like the real edge).
    pub fn from_acceptor(acceptor: SslAcceptor) -> Self {
        EdgeTls { acceptor }
    }

    /// Runs the server side of the TLS handshake.
    pub(crate) async fn accept(&self, stream: BoxedStream) -> Result<BoxedStream, HandshakeError> {
        let tls = tokio_boring::accept(&self.acceptor, stream)
            .await
            .map_err(|e| HandshakeError::Tls(e.to_string()))?;
        Ok(Box::new(tls))
    }
}

fn load_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(boring::error::ErrorStack) -> TlsSetupError {
    let path = path.to_path_buf();
    move |error| TlsSetupError::Load {
        what,
        path,
        detail: error.to_string(),
    }
}
