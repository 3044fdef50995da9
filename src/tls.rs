//! TLS termination (design §3 `listen[].tls`, §8): rustls with the ring
//! provider only, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, several
//! certificates chosen by SNI against each certificate's names (the first is
//! the default when no name fits or the client sends none).
//!
//! Certificates are loaded while a config is validated, so `weir check`
//! reports a bad PEM with its field path, and a reload whose certificate is
//! corrupt is refused as a whole: the certificate in use keeps serving.

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

/// One certificate chain and its key, as named in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A listener's TLS setup, ready to accept with.
#[derive(Debug)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub certs: Vec<CertPaths>,
    /// sha256 over every file's bytes (detects a certificate-only change).
    pub fingerprint: String,
}

/// What is wrong with one file (the validator adds the field path).
#[derive(Debug)]
pub struct CertProblem {
    /// Index into `certs`.
    pub index: usize,
    /// `cert` or `key`.
    pub field: &'static str,
    pub message: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load every chain and key and build the server config.
pub fn load(certs: &[CertPaths]) -> Result<Tls, Vec<CertProblem>> {
    let provider = provider();
    let mut problems = Vec::new();
    let mut keys = Vec::new();
    let mut hash = Sha256::new();
    for (index, paths) in certs.iter().enumerate() {
        let bad = |field, message: String| CertProblem { index, field, message };
        let read = |p: &PathBuf, field| {
            crate::files::read_capped(p, crate::files::MAX_PEM)
                .map_err(|e| bad(field, format!("cannot read {}: {e}", p.display())))
        };
        let (cert_pem, key_pem) = match (read(&paths.cert, "cert"), read(&paths.key, "key")) {
            (Ok(c), Ok(k)) => (c, k),
            (c, k) => {
                problems.extend(c.err());
                problems.extend(k.err());
                continue;
            }
        };
        hash.update(&cert_pem);
        hash.update(&key_pem);
        let chain: Vec<CertificateDer<'static>> =
            match CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>() {
                Ok(c) if !c.is_empty() => c,
                Ok(_) => {
                    problems.push(bad("cert", format!("{}: no CERTIFICATE in the PEM", paths.cert.display())));
                    continue;
                }
                Err(e) => {
                    problems.push(bad("cert", format!("{}: not a PEM certificate chain ({e})", paths.cert.display())));
                    continue;
                }
            };
        if let Some(first) = chain.first()
            && let Err(e) = webpki::EndEntityCert::try_from(first)
        {
            problems.push(bad("cert", format!("{}: not a usable X.509 certificate ({e})", paths.cert.display())));
            continue;
        }
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(k) => k,
            Err(e) => {
                problems.push(bad("key", format!("{}: no private key in the PEM ({e})", paths.key.display())));
                continue;
            }
        };
        match CertifiedKey::from_der(chain, key, &provider) {
            Ok(ck) => keys.push(Arc::new(ck)),
            Err(e) => problems.push(bad("key", format!("{}: {e}", paths.key.display()))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if keys.is_empty() {
        return Err(vec![CertProblem { index: 0, field: "cert", message: "list at least one certificate".into() }]);
    }
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| vec![CertProblem { index: 0, field: "cert", message: e.to_string() }])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { keys }));
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls { config: Arc::new(config), certs: certs.to_vec(), fingerprint: hex::encode(hash.finalize()) })
}

/// The fingerprint the files named in `certs` have on disk right now
/// (unreadable files hash as their error, so a change is still noticed).
pub fn fingerprint_on_disk(certs: &[CertPaths]) -> String {
    let mut hash = Sha256::new();
    for p in certs {
        for f in [&p.cert, &p.key] {
            match crate::files::read_capped(f, crate::files::MAX_PEM) {
                Ok(b) => hash.update(&b),
                Err(e) => hash.update(e.kind().to_string().as_bytes()),
            }
        }
    }
    hex::encode(hash.finalize())
}

/// Picks the first certificate valid for the SNI name; the first overall
/// when there is no name or none fits.
#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name().and_then(|n| ServerName::try_from(n).ok()) {
            let fits = |ck: &&Arc<CertifiedKey>| {
                ck.end_entity_cert().ok().is_some_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                })
            };
            if let Some(ck) = self.keys.iter().find(fits) {
                return Some(Arc::clone(ck));
            }
        }
        self.keys.first().cloned()
    }
}
