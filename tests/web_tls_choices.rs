//! `cipher_suites`, `curve_preferences` and `prefer_server_cipher_suites` are enforced on real
//! handshakes: a client offering only what is not listed fails, the listed order wins when the
//! server's order is preferred (the toolkit's default) and the client's order wins when not.

mod common;

use common::web::*;
use rustls::NamedGroup;

const ECDSA_AES128: u16 = 0xc02b;
const ECDSA_AES256: u16 = 0xc02c;
const ECDSA_CHACHA: u16 = 0xcca9;
const AES128: u16 = 0x1301;
const AES256: u16 = 0x1302;
const CHACHA: u16 = 0x1303;

struct Server {
    ca: Ca,
    served: Served,
    _dir: tempfile::TempDir,
}

/// An exporter with an ECDSA certificate and `tls_extra` in `tls_server_config`.
async fn server(tls_extra: &str) -> Server {
    let ca = Ca::new("test CA");
    let (dir, path) = tls_dir(&ca.leaf("localhost", Usage::Server, false), tls_extra, &[]);
    let served = serve_web(&path).await;
    Server {
        ca,
        served,
        _dir: dir,
    }
}

impl Server {
    async fn get(&self, offer: Offer<'_>) -> Result<Exchange, String> {
        let offer = Offer {
            cas: vec![&self.ca],
            ..offer
        };
        exchange(self.served.app.addr, &offer, "/metrics").await
    }
}

fn tls12(suites: &[u16]) -> Offer<'static> {
    Offer {
        suites: suites.to_vec(),
        tls12_only: true,
        ..Offer::default()
    }
}

#[tokio::test]
async fn tls12_suites_outside_the_list_are_refused_and_the_servers_order_wins() {
    let s = server(
        "  cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n    \
         - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n",
    )
    .await;
    let e = s.get(tls12(&[ECDSA_CHACHA])).await;
    assert!(e.is_err(), "an unlisted suite was negotiated: {e:?}");
    // The client prefers AES-128; the server's list (AES-256 first) wins by default.
    let x = s
        .get(tls12(&[ECDSA_AES128, ECDSA_AES256]))
        .await
        .expect("handshake");
    assert_eq!((x.status, x.suite, x.tls13), (200, ECDSA_AES256, false));

    let s = server(
        "  cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n    \
         - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n  prefer_server_cipher_suites: false\n",
    )
    .await;
    let x = s
        .get(tls12(&[ECDSA_AES128, ECDSA_AES256]))
        .await
        .expect("handshake");
    assert_eq!(x.suite, ECDSA_AES128, "the client's order wins");
    let x = s
        .get(tls12(&[ECDSA_AES256, ECDSA_AES128]))
        .await
        .expect("handshake");
    assert_eq!(x.suite, ECDSA_AES256, "the client's order wins");
}

#[tokio::test]
async fn tls13_suites_listed_restrict_tls13_and_unlisted_ones_leave_it_as_go_does() {
    // TLS 1.3 names listed: TLS 1.3 is restricted to them, in that order.
    let s = server(
        "  cipher_suites: [TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, \
         TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n",
    )
    .await;
    let only = |suites: &[u16]| Offer {
        suites: suites.to_vec(),
        ..Offer::default()
    };
    let e = s.get(only(&[AES128])).await;
    assert!(
        e.is_err(),
        "an unlisted TLS 1.3 suite was negotiated: {e:?}"
    );
    let x = s
        .get(only(&[AES128, CHACHA, AES256]))
        .await
        .expect("handshake");
    assert_eq!((x.suite, x.tls13), (AES256, true));
    // TLS 1.2 is limited to the one listed TLS 1.2 suite.
    assert!(s.get(tls12(&[ECDSA_AES256])).await.is_err());
    assert_eq!(
        s.get(tls12(&[ECDSA_AES128])).await.map(|x| x.suite),
        Ok(ECDSA_AES128)
    );

    // Only TLS 1.2 names listed: TLS 1.3 keeps every suite (Go does not configure TLS 1.3).
    let s = server("  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n").await;
    for suite in [AES128, AES256, CHACHA] {
        let x = s.get(only(&[suite])).await.expect("TLS 1.3 handshake");
        assert_eq!((x.suite, x.tls13), (suite, true));
    }
}

#[tokio::test]
async fn curves_outside_the_list_are_refused() {
    let s = server("  curve_preferences: [CurveP384, CurveP256]\n").await;
    for tls12_only in [false, true] {
        let offer = |groups: &[NamedGroup]| Offer {
            groups: groups.to_vec(),
            tls12_only,
            ..Offer::default()
        };
        let e = s.get(offer(&[NamedGroup::X25519])).await;
        assert!(
            e.is_err(),
            "X25519 negotiated (TLS 1.2 only: {tls12_only}): {e:?}"
        );
        let x = s
            .get(offer(&[NamedGroup::X25519, NamedGroup::secp384r1]))
            .await
            .expect("handshake");
        assert_eq!(x.group, Some(NamedGroup::secp384r1));
    }
    // Without curve_preferences, rustls's defaults (X25519 first) stay.
    let s = server("").await;
    let x = s.get(Offer::default()).await.expect("handshake");
    assert!(
        matches!(
            x.group,
            Some(NamedGroup::X25519 | NamedGroup::X25519MLKEM768)
        ),
        "{:?}",
        x.group
    );
}

#[tokio::test]
async fn versions_are_enforced() {
    let s = server("  min_version: TLS13\n").await;
    assert!(
        s.get(tls12(&[])).await.is_err(),
        "TLS 1.2 accepted above min_version"
    );
    assert!(s.get(Offer::default()).await.expect("TLS 1.3").tls13);
    let s = server("  max_version: TLS12\n").await;
    assert!(!s.get(Offer::default()).await.expect("TLS 1.2").tls13);
}
