//! TLS between the client and the edge.
//!
//! Why BoringSSL with Mozilla's intermediate profile and no ALPN: the `cloudflared` client always
//! speaks TLS to the edge (even for an `http://` hostname), offers no ALPN, and verifies the
//! certificate; the workspace already uses BoringSSL everywhere, so the same library terminates
//! it here. Plain mode (no [`EdgeTls`]) exists for the simulator, whose network has no TLS.

use crate::error::{HandshakeError, TlsSetupError};
use boring::ssl::SslAcceptor;
use reference_proxy::stream::BoxedStream;
use reference_proxy::tls::{TlsError, server_acceptor};
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
    /// Loads a PEM certificate chain and its private key (the proxy's loader: one place
    /// decides how the workspace terminates TLS).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsSetupError> {
        let acceptor = server_acceptor(cert, key).map_err(|error| match error {
            TlsError::Load { what, path, detail } => TlsSetupError::Load { what, path, detail },
            other => TlsSetupError::Setup(other.to_string()),
        })?;
        Ok(EdgeTls { acceptor })
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
