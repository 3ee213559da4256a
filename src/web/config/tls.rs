//! The TLS part of a web config: certificate, key and client CA files, TLS versions, the
//! rustls server configuration (aws-lc-rs provider, chosen explicitly) and the client
//! certificate policy (`client_auth_type`, `client_allowed_sans`).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::TlsAcceptor;
use yaml_rust2::Yaml;

use super::parse::Cx;
use super::{ClientAuth, Watched, WebConfigError};
use crate::secret::Secret;

impl Cx<'_> {
    pub(super) fn tls(
        &self,
        v: &Yaml,
        watched: &mut Watched,
        warnings: &mut Vec<String>,
    ) -> Result<(Option<TlsAcceptor>, ClientAuth), WebConfigError> {
        const S: &str = "tls_server_config";
        let k = |name: &str| format!("{S}.{name}");
        let mut cert_file = String::new();
        let mut key_file = String::new();
        let mut cert_inline = String::new();
        let mut key_inline = String::new();
        let mut client_auth_name = String::new();
        let mut client_ca_file = String::new();
        let mut allowed_sans = Vec::new();
        let mut min_version = String::new();
        let mut max_version = String::new();
        for (key, val) in self.map(v, S)? {
            let name = self.key_name(key, S)?;
            match name.as_str() {
                "cert_file" => cert_file = self.string(val, &k("cert_file"))?,
                "key_file" => key_file = self.string(val, &k("key_file"))?,
                "cert" => cert_inline = self.string(val, &k("cert"))?,
                "key" => key_inline = self.string(val, &k("key"))?,
                "client_auth_type" => {
                    client_auth_name = self.string(val, &k("client_auth_type"))?
                }
                "client_ca_file" => client_ca_file = self.string(val, &k("client_ca_file"))?,
                "client_allowed_sans" => {
                    allowed_sans = self.strings(val, &k("client_allowed_sans"))?
                }
                "min_version" => min_version = self.string(val, &k("min_version"))?,
                "max_version" => max_version = self.string(val, &k("max_version"))?,
                "cipher_suites" | "curve_preferences" => {
                    if !self.strings(val, &k(&name))?.is_empty() {
                        warnings.push(format!(
                            "{S}.{name}: ignored; rustls offers only modern, safe choices and picks them itself"
                        ));
                    }
                }
                "prefer_server_cipher_suites" => {
                    self.boolean(val, &k(&name))?;
                    warnings.push(format!(
                        "{S}.{name}: ignored; rustls always prefers the server's order"
                    ));
                }
                other => return Err(self.unknown(&format!("{S}."), other)),
            }
        }
        let client_auth = ClientAuth::parse(&client_auth_name).ok_or_else(|| {
            self.err(
                &k("client_auth_type"),
                format!(
                    "invalid value {client_auth_name:?}; expected one of NoClientCert, RequestClientCert, \
                     RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            )
        })?;
        if cert_file.is_empty()
            && cert_inline.is_empty()
            && key_file.is_empty()
            && key_inline.is_empty()
            && client_ca_file.is_empty()
            && client_auth_name.is_empty()
        {
            // As in the toolkit: an empty tls_server_config means plain HTTP.
            return Ok((None, ClientAuth::NoClientCert));
        }
        let cert_pem = match (cert_file.is_empty(), cert_inline.is_empty()) {
            (true, true) => return Err(self.err(S, "missing one of cert or cert_file")),
            (false, false) => return Err(self.err(S, "cert and cert_file are mutually exclusive")),
            (false, true) => self.read_file(&k("cert_file"), &cert_file, watched)?,
            (true, false) => cert_inline.into_bytes(),
        };
        let key_pem = Secret::new(match (key_file.is_empty(), key_inline.is_empty()) {
            (true, true) => return Err(self.err(S, "missing one of key or key_file")),
            (false, false) => return Err(self.err(S, "key and key_file are mutually exclusive")),
            (false, true) => {
                let bytes = self.read_file(&k("key_file"), &key_file, watched)?;
                String::from_utf8(bytes)
                    .map_err(|_| self.err(&k("key_file"), "not a PEM file (not UTF-8)"))?
            }
            (true, false) => key_inline,
        });
        let cert_key = if cert_file.is_empty() {
            k("cert")
        } else {
            k("cert_file")
        };
        let key_key = if key_file.is_empty() {
            k("key")
        } else {
            k("key_file")
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(&cert_key, format!("invalid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.err(&cert_key, "no CERTIFICATE block found"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes())
            .map_err(|e| self.err(&key_key, format!("no usable private key: {e}")))?;

        let versions = self.versions(&min_version, &max_version)?;
        let provider = provider();

        if client_auth == ClientAuth::NoClientCert && !client_ca_file.is_empty() {
            return Err(self.err(
                &k("client_ca_file"),
                "client CAs are configured but client_auth_type is NoClientCert; set client_auth_type",
            ));
        }
        if client_auth.verifies() && client_ca_file.is_empty() {
            return Err(self.err(
                &k("client_ca_file"),
                format!("required when client_auth_type is {client_auth:?}"),
            ));
        }
        if !allowed_sans.is_empty() && !client_auth.verifies() {
            return Err(self.err(
                &k("client_allowed_sans"),
                "needs client_auth_type VerifyClientCertIfGiven or RequireAndVerifyClientCert",
            ));
        }
        let verifier: Arc<dyn ClientCertVerifier> = match client_auth {
            ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
            ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
                Arc::new(ClientVerifier {
                    inner: None,
                    mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                    allowed_sans: Vec::new(),
                    provider: provider.clone(),
                })
            }
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
                let ca_key = k("client_ca_file");
                let pem = self.read_file(&ca_key, &client_ca_file, watched)?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| self.err(&ca_key, format!("invalid PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| self.err(&ca_key, format!("unusable CA certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(self.err(&ca_key, "no CERTIFICATE block found"));
                }
                let mut builder =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if client_auth == ClientAuth::VerifyClientCertIfGiven {
                    builder = builder.allow_unauthenticated();
                }
                let inner = builder.build().map_err(|e| {
                    self.err(&ca_key, format!("cannot build the client verifier: {e}"))
                })?;
                Arc::new(ClientVerifier {
                    mandatory: client_auth == ClientAuth::RequireAndVerifyClientCert,
                    inner: Some(inner),
                    allowed_sans,
                    provider: provider.clone(),
                })
            }
        };
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| self.err(&k("min_version"), format!("{e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| {
                self.err(
                    &key_key,
                    format!("cannot be used with the certificate in {cert_key}: {e}"),
                )
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Some(TlsAcceptor::from(Arc::new(server))), client_auth))
    }

    fn versions(
        &self,
        min: &str,
        max: &str,
    ) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, WebConfigError> {
        let rank = |key: &str, v: &str, default: u8| -> Result<u8, WebConfigError> {
            match v {
                "" => Ok(default),
                "TLS12" => Ok(12),
                "TLS13" => Ok(13),
                "TLS10" | "TLS11" => Err(self.err(
                    &format!("tls_server_config.{key}"),
                    format!("{v} is not supported (rustls speaks TLS 1.2 and 1.3 only)"),
                )),
                _ => Err(self.err(
                    &format!("tls_server_config.{key}"),
                    format!("invalid value {v:?}; expected TLS12 or TLS13"),
                )),
            }
        };
        let lo = rank("min_version", min, 12)?;
        let hi = rank("max_version", max, 13)?;
        if lo > hi {
            return Err(self.err(
                "tls_server_config.min_version",
                format!("{min} is above max_version {max}"),
            ));
        }
        let mut out = Vec::new();
        if lo <= 12 {
            out.push(&rustls::version::TLS12);
        }
        if hi >= 13 {
            out.push(&rustls::version::TLS13);
        }
        Ok(out)
    }
}

/// The aws-lc-rs provider (the one reqwest uses), chosen explicitly rather than the process
/// default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Client certificate policy beyond what `WebPkiClientVerifier` does: accepting any certificate
/// (`RequestClientCert`, `RequireAnyClientCert`) and checking `client_allowed_sans`.
#[derive(Debug)]
struct ClientVerifier {
    /// Chain verification against `client_ca_file`; `None` accepts any certificate.
    inner: Option<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    /// DNS names, IP addresses or URIs one of which the client certificate must carry.
    allowed_sans: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.inner {
            Some(inner) => inner.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(inner) = &self.inner {
            inner.verify_client_cert(end_entity, intermediates, now)?;
        }
        if !self.allowed_sans.is_empty() && !san_allowed(end_entity, &self.allowed_sans) {
            return Err(rustls::Error::General(
                "client certificate has none of the allowed SANs".into(),
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

/// Whether the certificate carries one of `allowed` as a DNS name, IP address or URI SAN.
/// (The toolkit also matches e-mail SANs; those are not read here.)
fn san_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let dns: Vec<&str> = ee.valid_dns_names().collect();
    let uris: Vec<&str> = ee.valid_uri_names().collect();
    allowed.iter().any(|a| {
        if dns.iter().any(|d| d.eq_ignore_ascii_case(a)) || uris.contains(&a.as_str()) {
            return true;
        }
        match a.parse::<std::net::IpAddr>() {
            Ok(ip) => ee
                .verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into()))
                .is_ok(),
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    #[test]
    fn old_tls_versions_are_refused() {
        let cx = Cx {
            file: Path::new("w.yml"),
            dir: PathBuf::from("."),
        };
        let e = cx.versions("TLS10", "").expect_err("TLS10");
        assert!(
            e.to_string()
                .contains("tls_server_config.min_version: TLS10 is not supported"),
            "{e}"
        );
        assert!(cx.versions("TLS13", "TLS12").is_err());
        assert_eq!(cx.versions("TLS13", "").expect("13").len(), 1);
        assert_eq!(cx.versions("", "").expect("default").len(), 2);
    }
}
