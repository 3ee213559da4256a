//! The client certificate policy of a web config, as exporter-toolkit (Go's crypto/tls) applies
//! it: `client_auth_type`, the CA pool (`client_ca_file` / `client_ca`, or the system roots when
//! neither is given) and `client_allowed_sans`.
//!
//! Two Go rules that webpki alone does not follow are implemented here: a client certificate that
//! is itself in the CA pool (byte for byte) is trusted without a chain, even when it says CA:TRUE
//! as `openssl req -x509` certificates do (its validity period and extended key usage are still
//! checked, and rustls checks the handshake signature with its key); and `client_allowed_sans`
//! matches DNS names, IP addresses, URIs and e-mail addresses.
//!
//! It owns the verifier only; reading the files and the YAML is `tls`'s business.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{ASN1Time, FromDer, GeneralName, X509Certificate};

use super::ClientAuth;

/// Where the certificates that client certificates must chain to come from.
pub(super) enum Cas {
    /// `client_ca_file` or `client_ca`: the certificates, DER.
    Listed(Vec<CertificateDer<'static>>),
    /// Neither given: the system's roots (as Go does with a nil `ClientCAs`).
    System,
}

/// What a handshake's client certificate must satisfy.
pub(super) struct Policy {
    pub auth: ClientAuth,
    pub cas: Cas,
    /// `client_allowed_sans`; `None` when the key is absent.
    pub allowed_sans: Option<Vec<String>>,
}

/// How the chain of a presented certificate is checked.
enum Check {
    /// Not at all (`RequestClientCert`, `RequireAnyClientCert`).
    Any,
    /// Against the pool with webpki, plus the "itself in the pool" rule for `pool`.
    Chain {
        inner: Arc<dyn ClientCertVerifier>,
        pool: Vec<CertificateDer<'static>>,
    },
    /// The pool is empty (no system roots found): every certificate fails, as in Go.
    Nothing,
}

/// The verifier for `policy`; `warnings` gets what the operator should know.
pub(super) fn verifier(
    policy: Policy,
    provider: &Arc<CryptoProvider>,
    warnings: &mut Vec<String>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let Policy {
        auth,
        cas,
        allowed_sans,
    } = policy;
    if auth == ClientAuth::NoClientCert {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    // With `client_allowed_sans`, exporter-toolkit's check runs on every handshake and fails
    // (with a panic caught by net/http) when no certificate came: a certificate is required.
    let mandatory = matches!(
        auth,
        ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
    ) || allowed_sans.is_some();
    let (check, hints) = if auth.verifies() {
        match cas {
            Cas::Listed(certs) => {
                let roots = store(&certs)?;
                let hints = roots.subjects();
                let inner =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| format!("cannot build the client verifier: {e}"))?;
                (Check::Chain { inner, pool: certs }, hints)
            }
            Cas::System => {
                let roots = system_roots(warnings);
                warnings.push(format!(
                    "client_auth_type {auth:?} without client_ca_file: client certificates are \
                     verified against the system's {} root certificates, so any publicly trusted \
                     client certificate passes; set client_ca_file to your own CA",
                    roots.len()
                ));
                if roots.is_empty() {
                    warnings.push(
                        "no system root certificates were found: every client certificate is \
                         refused"
                            .into(),
                    );
                    (Check::Nothing, Vec::new())
                } else {
                    // No hints: a list of every public CA helps no client.
                    let inner = WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .allow_unauthenticated()
                    .clear_root_hint_subjects()
                    .build()
                    .map_err(|e| format!("cannot build the client verifier: {e}"))?;
                    (
                        Check::Chain {
                            inner,
                            pool: Vec::new(),
                        },
                        Vec::new(),
                    )
                }
            }
        }
    } else {
        let hints = match cas {
            Cas::Listed(certs) => {
                warnings.push(format!(
                    "client_auth_type {auth:?}: client certificates are not verified; the client \
                     CAs are only named to clients as a hint (use RequireAndVerifyClientCert to \
                     verify)"
                ));
                store(&certs)?.subjects()
            }
            Cas::System => Vec::new(),
        };
        (Check::Any, hints)
    };
    Ok(Arc::new(ClientVerifier {
        check,
        hints,
        mandatory,
        allowed_sans,
        provider: provider.clone(),
    }))
}

fn store(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The system's roots (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`).
fn system_roots(warnings: &mut Vec<String>) -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    if let Some(e) = found.errors.first() {
        warnings.push(format!(
            "some system root certificates could not be read: {e}"
        ));
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// Client certificate policy beyond what `WebPkiClientVerifier` does.
#[derive(Debug)]
struct ClientVerifier {
    check: Check,
    /// CA names sent in the certificate request.
    hints: Vec<DistinguishedName>,
    mandatory: bool,
    allowed_sans: Option<Vec<String>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Any => f.write_str("Any"),
            Check::Chain { pool, .. } => write!(f, "Chain({} listed)", pool.len()),
            Check::Nothing => f.write_str("Nothing"),
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &self.check {
            Check::Any => {}
            Check::Nothing => {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                ));
            }
            Check::Chain { inner, pool } => {
                if pool.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                    listed_certificate_valid(end_entity, now)?;
                } else {
                    inner.verify_client_cert(end_entity, intermediates, now)?;
                }
            }
        }
        if let Some(allowed) = &self.allowed_sans
            && !san_allowed(end_entity, allowed)
        {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn parse<'a>(cert: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, rustls::Error> {
    X509Certificate::from_der(cert.as_ref())
        .map(|(_, c)| c)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// Go's checks of a certificate trusted because it is itself in the pool: the validity period
/// and, when it has an extended key usage, that it allows client authentication.
fn listed_certificate_valid(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let x = parse(cert)?;
    let now = i64::try_from(now.as_secs())
        .ok()
        .and_then(|s| ASN1Time::from_timestamp(s).ok())
        .ok_or(rustls::Error::FailedToGetCurrentTime)?;
    let validity = x.validity();
    if now < validity.not_before {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    match x.extended_key_usage() {
        Ok(None) => Ok(()),
        Ok(Some(eku)) if eku.value.any || eku.value.client_auth => Ok(()),
        Ok(Some(_)) => Err(rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose,
        )),
        Err(_) => Err(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        )),
    }
}

/// Whether the certificate carries one of `allowed` as a SAN: DNS names (case-insensitively),
/// IP addresses (as addresses, so `::1` matches `0:0::1`), URIs and e-mail addresses (exactly).
pub(super) fn san_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok(x) = parse(cert) else {
        return false;
    };
    let Ok(Some(san)) = x.subject_alternative_name() else {
        return false;
    };
    let allowed_ips: Vec<IpAddr> = allowed
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    san.value.general_names.iter().any(|name| match name {
        GeneralName::DNSName(d) => allowed.iter().any(|a| a.eq_ignore_ascii_case(d)),
        GeneralName::RFC822Name(e) => allowed.iter().any(|a| a == e),
        GeneralName::URI(u) => allowed.iter().any(|a| a == u),
        GeneralName::IPAddress(bytes) => {
            let ip = match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            };
            ip.is_some_and(|ip| allowed_ips.contains(&ip.to_canonical()))
        }
        _ => false,
    })
}
