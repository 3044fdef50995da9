//! TLS to upstreams (`upstreams.X.tls`): the rustls client config built
//! from the CA, the client certificate and the settings, the fingerprint a
//! reload compares, and the name each endpoint is verified as.

use super::provider;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem: the field of `upstreams.X.tls` it is about, and what is
/// wrong with it.
type Problem = (&'static str, String);

/// A client certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

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
    pub ca_file: Option<&'a Path>,
    pub client_cert: Option<(&'a Path, &'a Path)>,
    pub server_name: Option<&'a str>,
    pub insecure_skip_verify: bool,
    /// ALPN protocols to offer (`h2` for `protocol: h2`).
    pub alpn: Vec<Vec<u8>>,
}

/// Build the client config; every problem is a `(field, message)`.
pub fn upstream_client(files: &UpstreamTlsFiles<'_>) -> Result<UpstreamTls, Vec<(&'static str, String)>> {
    let mut hash = Sha256::new();
    let roots = roots(files.ca_file, &mut hash);
    let identity = match files.client_cert {
        None => Ok(None),
        Some((cert, key)) => client_identity(cert, key, &mut hash).map(Some),
    };
    let (roots, identity) = match (roots, identity) {
        (Ok(r), Ok(i)) => (r, i),
        (r, i) => return Err(r.err().into_iter().chain(i.err().into_iter().flatten()).collect()),
    };
    let config = client_config(files, roots, identity)?;
    let settings = settings(files);
    hash.update(&settings);
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name: files.server_name.map(str::to_owned),
        fingerprint: hex::encode(hash.finalize()),
        insecure: files.insecure_skip_verify,
        files: files_read(files),
        settings,
    })
}

/// A PEM file, capped; an unreadable one is a problem of `field`.
fn read(p: &Path, field: &'static str) -> Result<Vec<u8>, Problem> {
    crate::files::read_capped(p, crate::files::MAX_PEM)
        .map_err(|e| (field, format!("cannot read {}: {e}", p.display())))
}

/// What the upstream's certificate is verified against: the certificates
/// of `ca_file` (hashed into `hash`), or without one the webpki roots.
fn roots(ca_file: Option<&Path>, hash: &mut Sha256) -> Result<RootCertStore, Problem> {
    let mut roots = RootCertStore::empty();
    let Some(ca) = ca_file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let pem = read(ca, "ca_file")?;
    hash.update(&pem);
    let certs = match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return Err(("ca_file", format!("{}: no CERTIFICATE in the PEM", ca.display()))),
        Err(e) => return Err(("ca_file", format!("{}: not PEM certificates ({e})", ca.display()))),
    };
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(("ca_file", format!("{}: no usable CA certificate", ca.display())));
    }
    Ok(roots)
}

/// The certificate chain and key weir shows the upstream, both files
/// hashed into `hash`. Each unreadable file is a problem; past reading, the
/// first of: the chain is not PEM, the key is missing, the chain is empty.
fn client_identity(cert: &Path, key: &Path, hash: &mut Sha256) -> Result<Identity, Vec<Problem>> {
    let (cert_pem, key_pem) = match (read(cert, "client_cert_file"), read(key, "client_key_file")) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
    };
    hash.update(&cert_pem);
    hash.update(&key_pem);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| vec![("client_cert_file", format!("{}: not PEM certificates ({e})", cert.display()))])?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| vec![("client_key_file", format!("{}: no private key in the PEM ({e})", key.display()))])?;
    if chain.is_empty() {
        return Err(vec![("client_cert_file", format!("{}: no CERTIFICATE in the PEM", cert.display()))]);
    }
    Ok((chain, key_der))
}

/// TLS 1.3 and 1.2; the upstream verified against `roots` (or, with
/// `insecure_skip_verify`, not at all); the client certificate if any; the
/// ALPN offer.
fn client_config(
    files: &UpstreamTlsFiles<'_>,
    roots: RootCertStore,
    identity: Option<Identity>,
) -> Result<rustls::ClientConfig, Vec<Problem>> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| vec![("ca_file", e.to_string())])?;
    let builder = if files.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = match identity {
        Some((chain, key)) => {
            builder.with_client_auth_cert(chain, key).map_err(|e| vec![("client_key_file", e.to_string())])?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = files.alpn.clone();
    Ok(config)
}

/// The settings hashed after the files: server name, `insecure_skip_verify`
/// and the ALPN offer.
fn settings(files: &UpstreamTlsFiles<'_>) -> Vec<u8> {
    let mut settings = files.server_name.unwrap_or("").as_bytes().to_vec();
    settings.push(u8::from(files.insecure_skip_verify));
    for p in &files.alpn {
        settings.extend_from_slice(p);
    }
    settings
}

/// The files given, in the order they are hashed: CA, client certificate,
/// client key.
fn files_read(files: &UpstreamTlsFiles<'_>) -> Vec<PathBuf> {
    files
        .ca_file
        .into_iter()
        .chain(files.client_cert.into_iter().flat_map(|(c, k)| [c, k]))
        .map(Path::to_path_buf)
        .collect()
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
