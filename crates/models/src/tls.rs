//! One TLS set-up for all the HTTP clients of a process.
//!
//! Building a `reqwest` client on its own reads and parses every root certificate of the system (hundreds of files),
//! and a run builds several clients (the OpenAI-compatible one, the Anthropic and Gemini ones, one to probe the
//! window) before its first request. They all verify servers against the same roots, so the roots are loaded once,
//! on the first client built, and shared.

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_platform_verifier::Verifier;

/// A client builder with the process's shared TLS set-up: the same protocol versions, root certificates (the
/// platform's) and ALPN as `reqwest` would set up by itself. When the roots cannot be loaded, the builder is left to
/// set up TLS itself, so that building the client fails with `reqwest`'s own error, as without sharing.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    let builder = reqwest::Client::builder();
    match shared_config() {
        Some(config) => builder.tls_backend_preconfigured(config),
        None => builder,
    }
}

fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The platform's roots, loaded on first use; `None` when they cannot be (or no crypto provider is installed).
fn shared_verifier() -> Option<Arc<Verifier>> {
    static VERIFIER: OnceLock<Option<Arc<Verifier>>> = OnceLock::new();
    let provider = CryptoProvider::get_default()?.clone();
    VERIFIER.get_or_init(|| Verifier::new(provider).ok().map(Arc::new)).clone()
}

fn shared_config() -> Option<ClientConfig> {
    let provider = CryptoProvider::get_default()?.clone();
    let verifier = shared_verifier()?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What `reqwest` offers without its `http2` feature.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_one_root_store_and_keep_reqwest_settings() -> Result<(), reqwest::Error> {
        install_crypto_provider();
        let (Some(first), Some(second)) = (shared_verifier(), shared_verifier()) else {
            // A machine without root certificates: the builder is left to reqwest (and fails as it would).
            assert!(shared_config().is_none());
            return Ok(());
        };
        assert!(Arc::ptr_eq(&first, &second), "the roots are loaded once");
        let config = shared_config();
        assert_eq!(config.as_ref().map(|c| c.alpn_protocols.clone()), Some(vec![b"http/1.1".to_vec()]));
        assert!(config.is_some_and(|c| c.enable_sni));
        client_builder().build().map(drop)
    }
}
