//! The TLS part of a web config (`tls_server_config`): certificate and key (files or inline),
//! client CAs (file or inline), the client certificate policy, TLS versions, cipher suites,
//! curves and the server's order, turned into a rustls server configuration (aws-lc-rs provider)
//! that offers HTTP/2 by ALPN when `http_server_config.http2` is on.
//!
//! As in exporter-toolkit, a file wins over the inline form of the same thing (with a warning
//! here) and an empty section means plain HTTP. The names are `crypto`'s business, the client
//! certificate checks `client_cert`'s.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::NamedGroup;
use rustls::server::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::client_cert::{self, Cas, Policy};
use super::crypto::{self, Suite};
use super::parse::Cx;
use super::yaml::Node;
use super::{ClientAuth, WebConfigError};
use crate::secret::Secret;

const S: &str = "tls_server_config";

fn k(name: &str) -> String {
    format!("{S}.{name}")
}

/// The section's values as written.
#[derive(Default)]
struct Section {
    cert_file: String,
    key_file: String,
    cert: String,
    key: Secret,
    client_ca_file: String,
    client_ca: String,
    client_auth: String,
    allowed_sans: Option<Vec<String>>,
    min_version: String,
    max_version: String,
    suites: Vec<Suite>,
    curves: Vec<NamedGroup>,
    prefer_server_order: bool,
    /// Keys given that only matter with TLS on (for the warning when it is off).
    tuning: Vec<&'static str>,
}

impl Cx<'_> {
    fn section(&self, v: &Node) -> Result<Section, WebConfigError> {
        let mut s = Section {
            // The toolkit's default.
            prefer_server_order: true,
            ..Section::default()
        };
        for (key, val) in self.map(v, S)? {
            let name = self.key_name(key, S)?;
            match name.as_str() {
                "cert_file" => s.cert_file = self.string(val, &k("cert_file"))?,
                "key_file" => s.key_file = self.string(val, &k("key_file"))?,
                "cert" => s.cert = self.string(val, &k("cert"))?,
                "key" => s.key = Secret::new(self.string(val, &k("key"))?),
                "client_ca_file" => s.client_ca_file = self.string(val, &k("client_ca_file"))?,
                "client_ca" => s.client_ca = self.string(val, &k("client_ca"))?,
                "client_auth_type" => s.client_auth = self.string(val, &k("client_auth_type"))?,
                "client_allowed_sans" => {
                    s.allowed_sans = self.strings_opt(val, &k("client_allowed_sans"))?;
                    s.tuning.push("client_allowed_sans");
                }
                "min_version" => {
                    s.min_version = self.string(val, &k("min_version"))?;
                    s.tuning.push("min_version");
                }
                "max_version" => {
                    s.max_version = self.string(val, &k("max_version"))?;
                    s.tuning.push("max_version");
                }
                "cipher_suites" => {
                    for n in self
                        .strings_opt(val, &k("cipher_suites"))?
                        .unwrap_or_default()
                    {
                        let suite = crypto::cipher_suite(&n)
                            .map_err(|m| self.err(&k("cipher_suites"), m))?;
                        if !s.suites.contains(&suite) {
                            s.suites.push(suite);
                        }
                    }
                    s.tuning.push("cipher_suites");
                }
                "curve_preferences" => {
                    for n in self
                        .strings_opt(val, &k("curve_preferences"))?
                        .unwrap_or_default()
                    {
                        let g =
                            crypto::curve(&n).map_err(|m| self.err(&k("curve_preferences"), m))?;
                        if !s.curves.contains(&g) {
                            s.curves.push(g);
                        }
                    }
                    s.tuning.push("curve_preferences");
                }
                "prefer_server_cipher_suites" => {
                    s.prefer_server_order = self.boolean(val, &k(&name))?;
                    s.tuning.push("prefer_server_cipher_suites");
                }
                other => return Err(self.unknown(&format!("{S}."), other)),
            }
        }
        Ok(s)
    }

    /// The TLS acceptor (`None`: plain HTTP) and the client certificate policy.
    pub(super) fn tls(
        &self,
        v: &Node,
        http2: bool,
        watched: &mut Vec<PathBuf>,
        warnings: &mut Vec<String>,
    ) -> Result<(Option<TlsAcceptor>, ClientAuth), WebConfigError> {
        let s = self.section(v)?;
        let client_auth = ClientAuth::parse(&s.client_auth).ok_or_else(|| {
            self.err(
                &k("client_auth_type"),
                format!(
                    "invalid value {:?}; expected one of NoClientCert, RequestClientCert, \
                     RequireAnyClientCert (or its old name RequireClientCert), \
                     VerifyClientCertIfGiven, RequireAndVerifyClientCert",
                    s.client_auth
                ),
            )
        })?;
        if s.cert_file.is_empty()
            && s.cert.is_empty()
            && s.key_file.is_empty()
            && s.key.expose().is_empty()
            && s.client_ca_file.is_empty()
            && s.client_ca.is_empty()
            && s.client_auth.is_empty()
        {
            // As in the toolkit: no certificate, key, CA or policy means plain HTTP.
            if !s.tuning.is_empty() {
                warnings.push(format!(
                    "{S}: no certificate is configured, so the exporter serves plain HTTP and {} \
                     has no effect",
                    s.tuning.join(", ")
                ));
            }
            return Ok((None, ClientAuth::NoClientCert));
        }
        let (cert_key, cert_pem) = match (s.cert_file.is_empty(), s.cert.is_empty()) {
            (true, true) => return Err(self.err(S, "missing one of cert or cert_file")),
            (true, false) => (k("cert"), s.cert.clone().into_bytes()),
            (false, inline_empty) => {
                if !inline_empty {
                    warnings.push(format!(
                        "{S}.cert is ignored because cert_file is set (as in exporter-toolkit)"
                    ));
                }
                (
                    k("cert_file"),
                    self.read_file(&k("cert_file"), &s.cert_file, watched)?,
                )
            }
        };
        let (key_key, key_pem) = match (s.key_file.is_empty(), s.key.expose().is_empty()) {
            (true, true) => return Err(self.err(S, "missing one of key or key_file")),
            (true, false) => (k("key"), s.key.clone()),
            (false, inline_empty) => {
                if !inline_empty {
                    warnings.push(format!(
                        "{S}.key is ignored because key_file is set (as in exporter-toolkit)"
                    ));
                }
                let bytes = self.read_file(&k("key_file"), &s.key_file, watched)?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| self.err(&k("key_file"), "not a PEM file (not UTF-8)"))?;
                (k("key_file"), Secret::new(text))
            }
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(&cert_key, format!("invalid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.err(&cert_key, "no CERTIFICATE block found"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes())
            .map_err(|e| self.err(&key_key, format!("no usable private key: {e}")))?;

        let lo =
            crypto::version_rank(&s.min_version, 12).map_err(|m| self.err(&k("min_version"), m))?;
        let hi =
            crypto::version_rank(&s.max_version, 13).map_err(|m| self.err(&k("max_version"), m))?;
        if lo > hi {
            return Err(self.err(
                &k("min_version"),
                format!("{} is above max_version {}", s.min_version, s.max_version),
            ));
        }
        let provider = Arc::new(crypto::provider(&s.suites, &s.curves));
        let key_alg = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| self.err(&key_key, format!("no usable private key: {e}")))?
            .algorithm();
        let suite_warnings = crypto::check_suites(&s.suites, lo, hi, key_alg, http2)
            .map_err(|m| self.err(&k("cipher_suites"), m))?;
        warnings.extend(
            suite_warnings
                .into_iter()
                .map(|w| format!("{S}.cipher_suites {w}")),
        );

        let ca_key = k(if s.client_ca_file.is_empty() {
            "client_ca"
        } else {
            "client_ca_file"
        });
        // Checked before the file is read: the missing policy is the mistake to report.
        if client_auth == ClientAuth::NoClientCert
            && !(s.client_ca_file.is_empty() && s.client_ca.is_empty())
        {
            return Err(self.err(
                &ca_key,
                "client CAs are configured but client_auth_type is NoClientCert; set client_auth_type",
            ));
        }
        let cas = self.client_cas(&s, watched, warnings)?;
        match &s.allowed_sans {
            Some(_) if client_auth == ClientAuth::NoClientCert => {
                return Err(self.err(
                    &k("client_allowed_sans"),
                    "has no effect without client certificates (exporter-toolkit ignores it); \
                     set client_auth_type, e.g. RequireAndVerifyClientCert",
                ));
            }
            Some(sans) if sans.is_empty() => {
                return Err(self.err(
                    &k("client_allowed_sans"),
                    "an empty list refuses every client (as in exporter-toolkit); list the \
                     allowed SANs or remove the key",
                ));
            }
            Some(_) if matches!(
                client_auth,
                ClientAuth::RequestClientCert | ClientAuth::VerifyClientCertIfGiven
            ) => warnings.push(format!(
                "{S}.client_allowed_sans: clients without a certificate are refused although \
                 client_auth_type is {client_auth:?} (in exporter-toolkit their handshake fails too)"
            )),
            _ => {}
        }
        let policy = Policy {
            auth: client_auth,
            cas: cas.map_or(Cas::System, Cas::Listed),
            allowed_sans: s.allowed_sans.clone(),
        };
        let verifier =
            client_cert::verifier(policy, &provider, warnings).map_err(|m| self.err(&ca_key, m))?;

        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&crypto::versions(lo, hi))
            .map_err(|e| self.err(&k("min_version"), format!("{e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| {
                self.err(
                    &key_key,
                    format!("cannot be used with the certificate in {cert_key}: {e}"),
                )
            })?;
        // `prefer_server_cipher_suites` (default true): the order of `cipher_suites` wins over
        // the client's. Go has ignored this setting since Go 1.17; see SECURITY.md.
        server.ignore_client_order = s.prefer_server_order;
        server.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok((Some(TlsAcceptor::from(Arc::new(server))), client_auth))
    }

    /// The client CA certificates from `client_ca_file` (which wins, as in the toolkit) or
    /// `client_ca`; `None` when neither is set.
    fn client_cas(
        &self,
        s: &Section,
        watched: &mut Vec<PathBuf>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Vec<CertificateDer<'static>>>, WebConfigError> {
        let (key, pem) = match (s.client_ca_file.is_empty(), s.client_ca.is_empty()) {
            (true, true) => return Ok(None),
            (true, false) => (k("client_ca"), s.client_ca.clone().into_bytes()),
            (false, inline_empty) => {
                if !inline_empty {
                    warnings.push(format!(
                        "{S}.client_ca is ignored because client_ca_file is set (as in exporter-toolkit)"
                    ));
                }
                let key = k("client_ca_file");
                let pem = self.read_file(&key, &s.client_ca_file, watched)?;
                (key, pem)
            }
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(&key, format!("invalid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.err(&key, "no CERTIFICATE block found"));
        }
        Ok(Some(certs))
    }
}
