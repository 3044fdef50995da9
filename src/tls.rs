//! TLS termination (design §3 `listen[].tls`, §8): rustls with the ring
//! provider only, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, several
//! certificates chosen by SNI against each certificate's names (the first is
//! the default when no name fits or the client sends none).
//!
//! A listener with `client_ca` asks clients for a certificate signed by it
//! (`client_auth: required`, the default, refuses a client without one;
//! `optional` lets it in unauthenticated); the verified certificate's
//! subject is what segments (`match.client_cert`) and the access log see.
//!
//! Certificates are loaded while a config is validated, so `weir check`
//! reports a bad PEM with its field path, and a reload whose certificate is
//! corrupt is refused as a whole: the certificate in use keeps serving.
//!
//! TLS from weir to its upstreams is [`upstream`]'s.

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

pub mod upstream;

/// One certificate chain and its key, as named in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `listen[].tls.client_ca` and `client_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthPaths {
    pub ca: PathBuf,
    /// `required`: a client without a valid certificate is refused in the
    /// handshake; `optional`: it is served without one.
    pub required: bool,
}

/// A listener's TLS setup, ready to accept with.
#[derive(Debug)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub certs: Vec<CertPaths>,
    pub client_auth: Option<ClientAuthPaths>,
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

/// Load every chain and key (and the client CA) and build the server config.
pub fn load(certs: &[CertPaths], client_auth: Option<&ClientAuthPaths>) -> Result<Tls, Vec<CertProblem>> {
    let provider = provider();
    let mut hash = Sha256::new();
    let keys = certified_keys(certs, &provider, &mut hash)?;
    let verifier = match client_auth {
        None => None,
        Some(auth) => Some(client_ca_verifier(auth, &provider, &mut hash)?),
    };
    let config = server_config(provider, verifier, keys)?;
    Ok(Tls {
        config: Arc::new(config),
        certs: certs.to_vec(),
        client_auth: client_auth.cloned(),
        fingerprint: hex::encode(hash.finalize()),
    })
}

/// Every listed chain with its key, hashed into `hash`; the problems of every
/// entry that fails, or one for an empty list.
fn certified_keys(
    certs: &[CertPaths],
    provider: &Arc<rustls::crypto::CryptoProvider>,
    hash: &mut Sha256,
) -> Result<Vec<Arc<CertifiedKey>>, Vec<CertProblem>> {
    let mut problems = Vec::new();
    let mut keys = Vec::new();
    for (index, paths) in certs.iter().enumerate() {
        match certified_key(index, paths, provider, hash) {
            Ok(ck) => keys.push(ck),
            Err(p) => problems.extend(p),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if keys.is_empty() {
        return Err(vec![CertProblem { index: 0, field: "cert", message: "list at least one certificate".into() }]);
    }
    Ok(keys)
}

/// One entry of `certs`: both files read (each unreadable one is a problem),
/// a chain whose leaf is a usable certificate, and a key that fits it.
fn certified_key(
    index: usize,
    paths: &CertPaths,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    hash: &mut Sha256,
) -> Result<Arc<CertifiedKey>, Vec<CertProblem>> {
    let bad = |field, message: String| CertProblem { index, field, message };
    let read = |p: &PathBuf, field| {
        crate::files::read_capped(p, crate::files::MAX_PEM)
            .map_err(|e| bad(field, format!("cannot read {}: {e}", p.display())))
    };
    let (cert_pem, key_pem) = match (read(&paths.cert, "cert"), read(&paths.key, "key")) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
    };
    hash.update(&cert_pem);
    hash.update(&key_pem);
    let chain = server_chain(&cert_pem).map_err(|m| vec![bad("cert", format!("{}: {m}", paths.cert.display()))])?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| vec![bad("key", format!("{}: no private key in the PEM ({e})", paths.key.display()))])?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| vec![bad("key", format!("{}: {e}", paths.key.display()))])
}

/// The certificate chain in `pem`, refused when empty or when its leaf is
/// not an X.509 certificate webpki can use.
fn server_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return Err("no CERTIFICATE in the PEM".into()),
        Err(e) => return Err(format!("not a PEM certificate chain ({e})")),
    };
    if let Some(first) = chain.first()
        && let Err(e) = webpki::EndEntityCert::try_from(first)
    {
        return Err(format!("not a usable X.509 certificate ({e})"));
    }
    Ok(chain)
}

/// `client_ca` read and hashed (with `client_auth`) into `hash`, as the
/// verifier the listener asks clients' certificates of.
fn client_ca_verifier(
    auth: &ClientAuthPaths,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    hash: &mut Sha256,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Vec<CertProblem>> {
    let bad = |message| vec![CertProblem { index: 0, field: "client_ca", message }];
    let pem = crate::files::read_capped(&auth.ca, crate::files::MAX_PEM)
        .map_err(|e| bad(format!("cannot read {}: {e}", auth.ca.display())))?;
    hash.update(&pem);
    hash.update([u8::from(auth.required)]);
    client_verifier(&pem, auth.required, provider).map_err(|m| bad(format!("{}: {m}", auth.ca.display())))
}

/// TLS 1.3 and 1.2, the client verifier if any, certificates by SNI, ALPN
/// `h2` then `http/1.1`.
fn server_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    keys: Vec<Arc<CertifiedKey>>,
) -> Result<ServerConfig, Vec<CertProblem>> {
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| vec![CertProblem { index: 0, field: "cert", message: e.to_string() }])?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(BySni { keys }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A verifier for client certificates signed by the CAs in `pem`.
fn client_verifier(
    pem: &[u8],
    required: bool,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if cas.is_empty() {
        return Err("no CERTIFICATE in the PEM".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err("no usable CA certificate".into());
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = if required { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|e| e.to_string())
}

/// Which field of a client certificate a segment looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertField {
    /// Subject common name.
    Cn,
    /// Subject organization.
    O,
    /// Subject organizational unit.
    Ou,
    /// Subject alternative names: DNS names, emails, URIs.
    San,
}

/// The parts of a verified client certificate weir looks at, read once per
/// connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject as RFC 4514 writes it (most specific first:
    /// `CN=alice,OU=ops,O=Staff,C=SE`), as nginx's `$ssl_client_s_dn`.
    pub subject: String,
    pub cn: Vec<String>,
    pub o: Vec<String>,
    pub ou: Vec<String>,
    pub san: Vec<String>,
}

impl ClientCert {
    /// Read from the leaf's DER; None if it cannot be parsed (rustls has
    /// verified it, so that is not expected).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let texts = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
            it.filter_map(|a| a.as_str().ok()).map(str::to_owned).collect::<Vec<_>>()
        };
        let mut rdns = Vec::new();
        for rdn in subject.iter_rdn() {
            let parts: Vec<String> = rdn
                .iter()
                .map(|a| {
                    let name = x509_parser::objects::oid2sn(a.attr_type(), x509_parser::objects::oid_registry())
                        .map_or_else(|_| a.attr_type().to_id_string(), |sn| short_name(sn).to_owned());
                    let value = a.as_str().map_or_else(|_| format!("#{}", hex::encode(a.attr_value().data)), escape_dn);
                    format!("{name}={value}")
                })
                .collect();
            rdns.push(parts.join("+"));
        }
        rdns.reverse();
        let san = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => Some((*s).to_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Self {
            subject: rdns.join(","),
            cn: texts(&mut subject.iter_common_name()),
            o: texts(&mut subject.iter_organization()),
            ou: texts(&mut subject.iter_organizational_unit()),
            san,
        })
    }

    /// The certificate's values for one field.
    pub fn values(&self, field: CertField) -> &[String] {
        match field {
            CertField::Cn => &self.cn,
            CertField::O => &self.o,
            CertField::Ou => &self.ou,
            CertField::San => &self.san,
        }
    }
}

/// RFC 4514's short names for the registry's long ones.
fn short_name(sn: &str) -> &str {
    match sn {
        "commonName" => "CN",
        "organizationName" => "O",
        "organizationalUnit" | "organizationalUnitName" => "OU",
        "countryName" => "C",
        "localityName" => "L",
        "stateOrProvinceName" => "ST",
        "streetAddress" => "STREET",
        "domainComponent" => "DC",
        "userId" => "UID",
        other => other,
    }
}

/// RFC 4514 §2.4: escape what would end or confuse a value.
fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\{:02x}", u32::from(c) & 0xff));
            continue;
        }
        out.push(c);
    }
    out
}

/// The fingerprint the listener's files have on disk right now
/// (unreadable files hash as their error, so a change is still noticed).
pub fn fingerprint_on_disk(tls: &Tls) -> String {
    let mut hash = Sha256::new();
    let files = tls.certs.iter().flat_map(|p| [&p.cert, &p.key]).chain(tls.client_auth.as_ref().map(|a| &a.ca));
    for f in files {
        match crate::files::read_capped(f, crate::files::MAX_PEM) {
            Ok(b) => hash.update(&b),
            Err(e) => hash.update(e.kind().to_string().as_bytes()),
        }
    }
    if let Some(a) = &tls.client_auth {
        hash.update([u8::from(a.required)]);
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

#[cfg(test)]
mod tests {
    use super::escape_dn;

    #[test]
    fn subject_values_escape_what_rfc_4514_reserves() {
        assert_eq!(escape_dn("alice"), "alice");
        assert_eq!(escape_dn("Smith, John"), "Smith\\, John");
        assert_eq!(escape_dn("a+b=c"), "a\\+b=c");
        assert_eq!(escape_dn("#1 fan"), "\\#1 fan");
        assert_eq!(escape_dn(" padded "), "\\ padded\\ ");
        assert_eq!(escape_dn("q\"<>;\\"), "q\\\"\\<\\>\\;\\\\");
        assert_eq!(escape_dn("line\nbreak"), "line\\0abreak");
    }
}
