//! HTTPS for the daemon's endpoints: the rustls server configuration that a web configuration
//! file's `tls_server_config` describes, its PEM files read by [`crate::pem`] as `check` reads
//! them. [`super::file`] rebuilds it when the files change.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{NamedGroup, ServerConfig, SupportedCipherSuite};

use crate::config::{CipherSuite, ClientAuth, Curve, TlsSettings, TlsVersion};
use crate::pem::{certificates, certified_key, client_roots, invalid, private_key, TlsError};

/// The rustls configuration `tls` describes: HTTP/1.1; the TLS versions, TLS 1.2 suites and key
/// exchange groups it names, in its order; client certificates verified as it says.
pub fn server_config(tls: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let certs = certificates(&tls.cert_file)?;
    let key = private_key(&tls.key_file)?;
    let certified = certified_key(certs, key, &tls.cert_file, &tls.key_file)?;
    let provider = Arc::new(provider(tls));
    let versions: Vec<_> =
        [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (tls.min_version..=tls.max_version).contains(v))
            .map(|(_, version)| version)
            .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(&tls.cert_file, e))?;
    let builder = match &tls.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::VerifyIfGiven(ca) | ClientAuth::Require(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots(ca)?), provider);
            let verifier = match &tls.client_auth {
                ClientAuth::VerifyIfGiven(_) => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| invalid(ca, e))?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.ignore_client_order = tls.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The process's crypto provider (ring, the one the build has) narrowed to the suites and
/// groups `tls` names. TLS 1.3 suites are always all offered, as Go does.
fn provider(tls: &TlsSettings) -> CryptoProvider {
    let base = ServerConfig::builder().crypto_provider().clone();
    let mut provider = (*base).clone();
    if !tls.cipher_suites.is_empty() {
        let tls13 = base.cipher_suites.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
        let chosen = tls
            .cipher_suites
            .iter()
            .filter_map(|c| base.cipher_suites.iter().find(|s| s.suite() == suite(*c)));
        provider.cipher_suites = tls13.chain(chosen).copied().collect();
    }
    if !tls.curve_preferences.is_empty() {
        provider.kx_groups = tls
            .curve_preferences
            .iter()
            .filter_map(|c| base.kx_groups.iter().find(|g| g.name() == group(*c)).copied())
            .collect();
    }
    provider
}

fn suite(c: CipherSuite) -> rustls::CipherSuite {
    use rustls::CipherSuite as S;
    match c {
        CipherSuite::EcdheEcdsaAes128GcmSha256 => S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheEcdsaAes256GcmSha384 => S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheEcdsaChacha20Poly1305 => S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::EcdheRsaAes128GcmSha256 => S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheRsaAes256GcmSha384 => S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheRsaChacha20Poly1305 => S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    }
}

fn group(c: Curve) -> NamedGroup {
    match c {
        Curve::X25519 => NamedGroup::X25519,
        Curve::P256 => NamedGroup::secp256r1,
        Curve::P384 => NamedGroup::secp384r1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(extra: &str) -> TlsSettings {
        let yaml = format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}");
        crate::config::WebConfig::parse(&yaml, Path::new("tests/config/web")).unwrap().tls.unwrap()
    }

    #[test]
    fn every_supported_name_is_in_the_crypto_provider() {
        let all = "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, \
                   TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, \
                   TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256]\n  \
                   curve_preferences: [CurveP384, X25519, CurveP256]\n";
        let tls = settings(all);
        let p = provider(&tls);
        let tls12 = p.cipher_suites.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls12(_))).count();
        assert_eq!(tls12, 6, "every named TLS 1.2 suite is offered");
        let groups: Vec<NamedGroup> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [NamedGroup::secp384r1, NamedGroup::X25519, NamedGroup::secp256r1],
            "in the file's order"
        );
        server_config(&tls).expect("a configuration rustls accepts");
    }

    #[test]
    fn narrowing_keeps_tls13_and_only_the_named_tls12_suites() {
        let p = provider(&settings("  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n"));
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| s.suite())
            .collect();
        assert_eq!(tls12, [rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]);
        assert!(p.cipher_suites.iter().any(|s| matches!(s, SupportedCipherSuite::Tls13(_))));
        let only13 = server_config(&settings("  min_version: TLS13\n")).unwrap();
        assert!(only13.ignore_client_order, "prefer_server_cipher_suites defaults to true");
    }
}
