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

/// TLS to an upstream (`upstreams.X.tls`): a rustls client config, built
/// once per config load and shared by every connection, so sessions resume.
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The name to verify (and send as SNI); None: the endpoint's host.
    pub server_name: Option<String>,
    /// sha256 of the files and settings, so a reload that changes them
    /// rebuilds the upstream.
    pub fingerprint: String,
    pub insecure: bool,
    /// The files read (CA, client certificate, client key, those given)
    /// and the settings hashed after them: what `fingerprint_on_disk`
    /// hashes again to notice a renewed file.
    pub files: Vec<PathBuf>,
    settings: Vec<u8>,
}

impl UpstreamTls {
    /// The fingerprint the same files and settings have on disk now (an
    /// unreadable file hashes as its error, so a change is still noticed).
    pub fn fingerprint_on_disk(&self) -> String {
        let mut hash = Sha256::new();
        for f in &self.files {
            match crate::files::read_capped(f, crate::files::MAX_PEM) {
                Ok(b) => hash.update(&b),
                Err(e) => hash.update(e.kind().to_string().as_bytes()),
            }
        }
        hash.update(&self.settings);
        hex::encode(hash.finalize())
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("fingerprint", &self.fingerprint)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}
impl Eq for UpstreamTls {}

/// The files of `upstreams.X.tls`.
pub struct UpstreamTlsFiles<'a> {
    pub ca_file: Option<&'a std::path::Path>,
    pub client_cert: Option<(&'a std::path::Path, &'a std::path::Path)>,
    pub server_name: Option<&'a str>,
    pub insecure_skip_verify: bool,
    /// ALPN protocols to offer (`h2` for `protocol: h2`).
    pub alpn: Vec<Vec<u8>>,
}

/// Build the client config; every problem is a `(field, message)`.
pub fn upstream_client(files: &UpstreamTlsFiles<'_>) -> Result<UpstreamTls, Vec<(&'static str, String)>> {
    let provider = provider();
    let mut problems = Vec::new();
    let mut hash = Sha256::new();
    let read = |p: &std::path::Path, field: &'static str| {
        crate::files::read_capped(p, crate::files::MAX_PEM)
            .map_err(|e| (field, format!("cannot read {}: {e}", p.display())))
    };
    let mut roots = rustls::RootCertStore::empty();
    match files.ca_file {
        Some(ca) => match read(ca, "ca_file") {
            Ok(pem) => {
                hash.update(&pem);
                let certs: Result<Vec<CertificateDer<'static>>, _> = CertificateDer::pem_slice_iter(&pem).collect();
                match certs {
                    Ok(c) if !c.is_empty() => {
                        let (added, _) = roots.add_parsable_certificates(c);
                        if added == 0 {
                            problems.push(("ca_file", format!("{}: no usable CA certificate", ca.display())));
                        }
                    }
                    Ok(_) => problems.push(("ca_file", format!("{}: no CERTIFICATE in the PEM", ca.display()))),
                    Err(e) => problems.push(("ca_file", format!("{}: not PEM certificates ({e})", ca.display()))),
                }
            }
            Err(p) => problems.push(p),
        },
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let client = match files.client_cert {
        None => None,
        Some((cert, key)) => match (read(cert, "client_cert_file"), read(key, "client_key_file")) {
            (Ok(c), Ok(k)) => {
                hash.update(&c);
                hash.update(&k);
                let chain: Result<Vec<CertificateDer<'static>>, _> = CertificateDer::pem_slice_iter(&c).collect();
                match (chain, PrivateKeyDer::from_pem_slice(&k)) {
                    (Ok(chain), Ok(key)) if !chain.is_empty() => Some((chain, key)),
                    (Ok(_), Ok(_)) => {
                        problems.push(("client_cert_file", format!("{}: no CERTIFICATE in the PEM", cert.display())));
                        None
                    }
                    (Err(e), _) => {
                        problems.push(("client_cert_file", format!("{}: not PEM certificates ({e})", cert.display())));
                        None
                    }
                    (_, Err(e)) => {
                        problems
                            .push(("client_key_file", format!("{}: no private key in the PEM ({e})", key.display())));
                        None
                    }
                }
            }
            (c, k) => {
                problems.extend(c.err());
                problems.extend(k.err());
                None
            }
        },
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let builder = match rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    {
        Ok(b) => b,
        Err(e) => return Err(vec![("ca_file", e.to_string())]),
    };
    let builder = if files.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = match client {
        Some((chain, key)) => match builder.with_client_auth_cert(chain, key) {
            Ok(c) => c,
            Err(e) => return Err(vec![("client_key_file", e.to_string())]),
        },
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = files.alpn.clone();
    let mut settings = files.server_name.unwrap_or("").as_bytes().to_vec();
    settings.push(u8::from(files.insecure_skip_verify));
    for p in &files.alpn {
        settings.extend_from_slice(p);
    }
    hash.update(&settings);
    let read: Vec<PathBuf> = files
        .ca_file
        .into_iter()
        .chain(files.client_cert.into_iter().flat_map(|(c, k)| [c, k]))
        .map(std::path::Path::to_path_buf)
        .collect();
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name: files.server_name.map(str::to_owned),
        fingerprint: hex::encode(hash.finalize()),
        insecure: files.insecure_skip_verify,
        files: read,
        settings,
    })
}

/// `insecure_skip_verify: true`: any certificate is accepted (signatures
/// are still checked). `weir check` warns about it.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name to verify an upstream as: `configured`, or the host of
/// `address` (`host:port`, `[v6]:port`).
pub fn server_name(configured: Option<&str>, address: &str) -> Result<ServerName<'static>, String> {
    let host = match configured {
        Some(n) => n,
        None => address.rsplit_once(':').map_or(address, |(h, _)| h).trim_start_matches('[').trim_end_matches(']'),
    };
    ServerName::try_from(host.to_owned()).map_err(|e| format!("`{host}` cannot be a TLS server name: {e}"))
}
