//! The TLS choices of a web config in exporter-toolkit's vocabulary: `min_version` /
//! `max_version`, Go's cipher suite names (`cipher_suites`) and curve names
//! (`curve_preferences`), turned into the rustls crypto provider (aws-lc-rs) that offers exactly
//! what is listed. A name Go knows but rustls does not implement (CBC suites, RSA key exchange,
//! P-521, TLS 1.0/1.1) is refused with the reason; an invented name is refused as unknown, as the
//! toolkit does. Also Go's HTTP/2 rule that a TLS 1.2 suite list must hold an AES-128-GCM suite.
//!
//! Pure functions returning messages; `tls` adds the file and key to them.

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs;
use rustls::{NamedGroup, SignatureAlgorithm, SupportedProtocolVersion};

/// What Go calls a cipher suite, and whether rustls has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A TLS 1.3 suite (Go does not let these be configured; see `provider`).
    Tls13,
    /// A TLS 1.2 ECDHE suite for RSA certificates that rustls implements.
    Tls12Rsa,
    /// A TLS 1.2 ECDHE suite for ECDSA (and Ed25519) certificates that rustls implements.
    Tls12Ecdsa,
    /// In Go's `tls.CipherSuites()` (so the toolkit takes it), but CBC: not in rustls.
    Cbc,
    /// In Go's `tls.InsecureCipherSuites()`: the toolkit refuses it as unknown, rustls lacks it.
    Insecure,
}

/// Every cipher suite name Go's crypto/tls knows, with its IANA id.
const GO_CIPHER_SUITES: &[(&str, u16, Kind)] = &[
    ("TLS_AES_128_GCM_SHA256", 0x1301, Kind::Tls13),
    ("TLS_AES_256_GCM_SHA384", 0x1302, Kind::Tls13),
    ("TLS_CHACHA20_POLY1305_SHA256", 0x1303, Kind::Tls13),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xc02b,
        Kind::Tls12Ecdsa,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xc02c,
        Kind::Tls12Ecdsa,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xc02f,
        Kind::Tls12Rsa,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xc030,
        Kind::Tls12Rsa,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xcca8,
        Kind::Tls12Rsa,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xcca9,
        Kind::Tls12Ecdsa,
    ),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xc009, Kind::Cbc),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xc00a, Kind::Cbc),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xc013, Kind::Cbc),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xc014, Kind::Cbc),
    ("TLS_RSA_WITH_RC4_128_SHA", 0x0005, Kind::Insecure),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000a, Kind::Insecure),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", 0x002f, Kind::Insecure),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035, Kind::Insecure),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003c, Kind::Insecure),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009c, Kind::Insecure),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009d, Kind::Insecure),
    ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xc007, Kind::Insecure),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xc011, Kind::Insecure),
    (
        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        0xc012,
        Kind::Insecure,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        0xc023,
        Kind::Insecure,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        0xc027,
        Kind::Insecure,
    ),
];

/// The suites Go's HTTP/2 server insists on when a TLS 1.2 suite list is given.
const HTTP2_REQUIRED: [u16; 2] = [0xc02f, 0xc02b];

/// A listed cipher suite rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Suite {
    pub name: &'static str,
    id: u16,
    kind: Kind,
}

impl Suite {
    pub fn is_tls13(self) -> bool {
        self.kind == Kind::Tls13
    }
}

/// Go's name of a cipher suite, as the toolkit reads `cipher_suites`.
pub(super) fn cipher_suite(name: &str) -> Result<Suite, String> {
    let Some(&(go_name, id, kind)) = GO_CIPHER_SUITES.iter().find(|(n, _, _)| *n == name) else {
        return Err(format!(
            "unknown cipher suite {name:?} (expected a name from Go's tls.CipherSuites(), e.g. \
             TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS_AES_128_GCM_SHA256)"
        ));
    };
    match kind {
        Kind::Cbc => Err(format!(
            "{name} is not supported: rustls implements no CBC cipher suites (use the GCM or \
             CHACHA20_POLY1305 suites)"
        )),
        Kind::Insecure => Err(format!(
            "{name} is not supported: Go lists it among its insecure suites (exporter-toolkit \
             refuses it as unknown) and rustls does not implement it"
        )),
        _ => Ok(Suite {
            name: go_name,
            id,
            kind,
        }),
    }
}

/// Go's name of a curve, as the toolkit reads `curve_preferences`.
pub(super) fn curve(name: &str) -> Result<NamedGroup, String> {
    match name {
        "X25519" => Ok(NamedGroup::X25519),
        "CurveP256" => Ok(NamedGroup::secp256r1),
        "CurveP384" => Ok(NamedGroup::secp384r1),
        "CurveP521" => Err(
            "CurveP521 is not supported: rustls does not implement P-521 key exchange (use \
             X25519, CurveP256 or CurveP384)"
                .into(),
        ),
        _ => Err(format!(
            "unknown curve {name:?} (expected one of X25519, CurveP256, CurveP384, CurveP521)"
        )),
    }
}

/// `min_version` / `max_version` values as a rank (12, 13); `default` when empty.
pub(super) fn version_rank(value: &str, default: u8) -> Result<u8, String> {
    match value {
        "" => Ok(default),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => Err(format!(
            "{value} is not supported (rustls speaks TLS 1.2 and 1.3 only)"
        )),
        _ => Err(format!(
            "invalid value {value:?}; expected TLS12 or TLS13 (TLS10 and TLS11 are not supported)"
        )),
    }
}

/// The protocol versions from `lo` to `hi`.
pub(super) fn versions(lo: u8, hi: u8) -> Vec<&'static SupportedProtocolVersion> {
    let mut out = Vec::new();
    if lo <= 12 && hi >= 12 {
        out.push(&rustls::version::TLS12);
    }
    if hi >= 13 {
        out.push(&rustls::version::TLS13);
    }
    out
}

/// The provider offering exactly `suites` (in that order) and `groups` (in that order); empty
/// lists keep rustls's defaults. As in Go, listing only TLS 1.2 suites leaves TLS 1.3's
/// (which Go does not let one configure) all enabled; listing TLS 1.3 suites restricts TLS 1.3
/// to them, which Go would ignore.
pub(super) fn provider(suites: &[Suite], groups: &[NamedGroup]) -> CryptoProvider {
    let mut p = aws_lc_rs::default_provider();
    if !suites.is_empty() {
        let find = |id: u16| {
            aws_lc_rs::ALL_CIPHER_SUITES
                .iter()
                .find(|s| u16::from(s.suite()) == id)
                .copied()
        };
        let mut chosen: Vec<_> = suites
            .iter()
            .filter(|s| s.is_tls13())
            .filter_map(|s| find(s.id))
            .collect();
        if chosen.is_empty() {
            chosen.extend(
                p.cipher_suites
                    .iter()
                    .filter(|s| s.version() == &rustls::version::TLS13)
                    .copied(),
            );
        }
        chosen.extend(
            suites
                .iter()
                .filter(|s| !s.is_tls13())
                .filter_map(|s| find(s.id)),
        );
        p.cipher_suites = chosen;
    }
    if !groups.is_empty() {
        p.kx_groups = groups
            .iter()
            .filter_map(|g| {
                aws_lc_rs::ALL_KX_GROUPS
                    .iter()
                    .find(|k| k.name() == *g)
                    .copied()
            })
            .collect();
    }
    p
}

/// Whether a TLS 1.2 suite can be used with a server key of `alg`.
fn usable_with(suite: Suite, alg: SignatureAlgorithm) -> bool {
    match suite.kind {
        Kind::Tls12Rsa => alg == SignatureAlgorithm::RSA,
        Kind::Tls12Ecdsa => alg == SignatureAlgorithm::ECDSA || alg == SignatureAlgorithm::ED25519,
        _ => true,
    }
}

/// What a suite list means for the TLS versions `lo..=hi` and a server key of `alg`:
/// `Err` when no client could connect, otherwise warnings (possibly none).
pub(super) fn check_suites(
    suites: &[Suite],
    lo: u8,
    hi: u8,
    alg: SignatureAlgorithm,
    http2: bool,
) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    if suites.is_empty() || lo > 12 {
        if !suites.is_empty() && suites.iter().all(|s| !s.is_tls13()) {
            warnings.push(
                "lists only TLS 1.2 suites but min_version is TLS13, so it has no effect".into(),
            );
        }
        return Ok(warnings);
    }
    let tls12: Vec<Suite> = suites.iter().copied().filter(|s| !s.is_tls13()).collect();
    let usable = tls12.iter().any(|s| usable_with(*s, alg));
    let key = match alg {
        SignatureAlgorithm::RSA => "RSA",
        SignatureAlgorithm::ED25519 => "Ed25519",
        _ => "ECDSA",
    };
    let problem = if tls12.is_empty() {
        Some("lists no TLS 1.2 suite, so TLS 1.2 clients cannot connect".to_string())
    } else if !usable {
        Some(format!(
            "none of its TLS 1.2 suites works with the server's {key} key, so TLS 1.2 clients \
             cannot connect (use the ECDHE_{} suites)",
            if key == "RSA" { "RSA" } else { "ECDSA" }
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        if hi < 13 {
            return Err(format!("{problem}, and max_version is TLS12"));
        }
        warnings.push(format!(
            "{problem}; set min_version: TLS13 to say so (exporter-toolkit behaves the same)"
        ));
    }
    // Go's net/http refuses to start HTTP/2 over such a list (exporter-toolkit's
    // "TLSConfig.CipherSuites is missing an HTTP/2-required AES_128_GCM_SHA256 cipher").
    if http2 && !suites.iter().any(|s| HTTP2_REQUIRED.contains(&s.id)) {
        return Err("HTTP/2 (http_server_config.http2, on by default) needs \
             TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 \
             in the list when TLS 1.2 is allowed (exporter-toolkit refuses to start too); add \
             one, set min_version: TLS13, or set http2: false"
            .into());
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_map_to_rustls_or_are_refused_with_the_reason() {
        for (name, _, kind) in GO_CIPHER_SUITES {
            let r = cipher_suite(name);
            match kind {
                Kind::Cbc => assert!(r.expect_err(name).contains("no CBC cipher suites")),
                Kind::Insecure => assert!(r.expect_err(name).contains("insecure")),
                _ => {
                    let s = r.expect(name);
                    // Every accepted name exists in the provider.
                    assert!(!provider(&[s], &[]).cipher_suites.is_empty());
                    assert!(
                        aws_lc_rs::ALL_CIPHER_SUITES
                            .iter()
                            .any(|x| u16::from(x.suite()) == s.id),
                        "{name}"
                    );
                }
            }
        }
        let e = cipher_suite("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048").expect_err("invented");
        assert!(e.contains("unknown cipher suite"), "{e}");
        assert!(
            curve("CurveP257")
                .expect_err("invented")
                .contains("unknown curve")
        );
        assert!(curve("CurveP521").expect_err("P-521").contains("P-521"));
        for g in ["X25519", "CurveP256", "CurveP384"] {
            let named = curve(g).expect(g);
            assert_eq!(provider(&[], &[named]).kx_groups.len(), 1, "{g}");
        }
    }

    #[test]
    fn versions() {
        let e = version_rank("TLS10", 12).expect_err("TLS10");
        assert!(e.contains("TLS10 is not supported"), "{e}");
        assert!(
            version_rank("TLS111", 12)
                .expect_err("junk")
                .contains("invalid value")
        );
        assert_eq!(version_rank("", 13), Ok(13));
        assert_eq!(super::versions(13, 13).len(), 1);
        assert_eq!(super::versions(12, 12).len(), 1);
        assert_eq!(super::versions(12, 13).len(), 2);
    }

    #[test]
    fn the_provider_offers_exactly_what_is_listed() {
        let ecdsa256 = cipher_suite("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384").expect("suite");
        let ecdsa128 = cipher_suite("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256").expect("suite");
        let p = provider(&[ecdsa256, ecdsa128], &[NamedGroup::secp384r1]);
        let ids: Vec<u16> = p
            .cipher_suites
            .iter()
            .map(|s| u16::from(s.suite()))
            .collect();
        // All TLS 1.3 suites (not configurable in Go), then the listed TLS 1.2 ones in order.
        assert_eq!(&ids[ids.len() - 2..], &[0xc02c, 0xc02b]);
        assert_eq!(ids.len(), 2 + 3);
        assert_eq!(p.kx_groups.len(), 1);
        let aes128 = cipher_suite("TLS_AES_128_GCM_SHA256").expect("suite");
        let p = provider(&[aes128, ecdsa128], &[]);
        let ids: Vec<u16> = p
            .cipher_suites
            .iter()
            .map(|s| u16::from(s.suite()))
            .collect();
        assert_eq!(ids, vec![0x1301, 0xc02b]);
    }

    #[test]
    fn suite_lists_that_lock_everyone_out_are_refused() {
        let rsa128 = cipher_suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").expect("suite");
        let rsa256 = cipher_suite("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384").expect("suite");
        let aes = cipher_suite("TLS_AES_256_GCM_SHA384").expect("suite");
        let ecdsa = SignatureAlgorithm::ECDSA;
        let rsa = SignatureAlgorithm::RSA;
        assert_eq!(check_suites(&[rsa128], 12, 13, rsa, true), Ok(vec![]));
        // Go's HTTP/2 rule.
        let e = check_suites(&[rsa256], 12, 12, rsa, true).expect_err("http2");
        assert!(e.contains("HTTP/2"), "{e}");
        assert_eq!(check_suites(&[rsa256], 12, 12, rsa, false), Ok(vec![]));
        assert_eq!(
            check_suites(&[rsa256], 13, 13, rsa, true).map(|w| w.len()),
            Ok(1)
        );
        // RSA suites with an ECDSA key: nobody on TLS 1.2.
        let e = check_suites(&[rsa128], 12, 12, ecdsa, false).expect_err("key type");
        assert!(e.contains("ECDSA key"), "{e}");
        assert_eq!(
            check_suites(&[rsa128], 12, 13, ecdsa, false).map(|w| w.len()),
            Ok(1)
        );
        // Only TLS 1.3 suites listed while TLS 1.2 is allowed.
        assert!(check_suites(&[aes], 12, 12, rsa, false).is_err());
        assert_eq!(
            check_suites(&[aes], 12, 13, rsa, false).map(|w| w.len()),
            Ok(1)
        );
    }
}
