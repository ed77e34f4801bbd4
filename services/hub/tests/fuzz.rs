//! Fuzzing what a hostile caller or a broken file reaches in the hub: page tokens (sent by any
//! caller on every listing) and the certificate revocation list read by the TLS configuration
//! (issue 15, item 2).
//!
//! Each property runs `PROPTEST_CASES` generated cases (256 unless set; `.ci/fuzz` sets more),
//! and each target also runs the checked-in seed corpus under `fuzz/corpus/<target>/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm};
use xinqiao_domain::Error;
use xinqiao_hub::paging::{decode, encode, next_token};
use xinqiao_hub::pki;
use xinqiao_hub::tls::ServerTls;

/// The default configuration (which reads `PROPTEST_CASES`), with failures kept in
/// `tests/proptest-regressions/` and replayed first on every later run. XorShift instead of
/// ChaCha: unoptimised in a debug build, ChaCha took most of the run's time.
fn config() -> ProptestConfig {
    ProptestConfig {
        rng_algorithm: RngAlgorithm::XorShift,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/fuzz.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// The files of `fuzz/corpus/<target>/`, name and bytes, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    files
}

// ---------------------------------------------------------------------------------------------
// Page tokens

/// The listings the hub's services page (any name without a line break would do).
const LISTINGS: [&str; 6] = ["entries", "departments", "schemas", "grants", "requests", "audit"];

fn listing() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(LISTINGS.to_vec()).prop_map(str::to_string),
        1 => "[^\n]{0,12}",
    ]
}

/// Keys as listings use them (codes, ids, timestamps) and anything else a key could hold.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{6}/[0-9]{6}",
        "[0-9A-Z]{18}",
        any::<String>(),
        "\\PC{0,40}",
        "[\n\r\0=+/_-]{0,6}",
    ]
}

/// Strings a caller may put in `page_token`: base64 of anything, the hub's own tokens with one
/// character changed, padded or standard-alphabet base64, and arbitrary text.
fn token_text() -> impl Strategy<Value = String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_=+/-]{0,40}",
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| STANDARD.encode(b)),
        (listing(), key()).prop_map(|(l, k)| URL_SAFE.encode(format!("{l}\n{k}"))),
        (listing(), key(), any::<Index>(), any::<char>()).prop_map(|(l, k, at, c)| {
            let token = encode(&l, &k);
            let mut chars: Vec<char> = token.chars().collect();
            if !chars.is_empty() {
                let i = at.index(chars.len());
                chars[i] = c;
            }
            chars.into_iter().collect()
        }),
        (listing(), key()).prop_map(|(l, k)| format!(" {}\n", encode(&l, &k))),
    ]
}

/// Decoding never panics; an empty token is the first page; a token is accepted only when it is
/// exactly the one the hub issues for that key and listing, and its key holds no control
/// character; a refusal is INVALID_ARGUMENT on `page_token`, without echoing the token.
fn decode_holds(listing: &str, token: &str) -> Result<(), TestCaseError> {
    match decode(listing, token) {
        Ok(None) => prop_assert!(token.is_empty()),
        Ok(Some(key)) => {
            prop_assert_eq!(encode(listing, &key), token);
            prop_assert!(!key.chars().any(char::is_control), "{:?}", key);
        }
        Err(Error::InvalidArgument(violations)) => {
            prop_assert!(!token.is_empty());
            prop_assert_eq!(violations.len(), 1);
            prop_assert_eq!(violations[0].field.as_str(), "page_token");
            if token.len() > 8 {
                prop_assert!(!violations[0].description.contains(token));
            }
        }
        Err(other) => prop_assert!(false, "unexpected error {:?}", other),
    }
    Ok(())
}

#[test]
fn page_token_corpus() {
    for (name, bytes) in corpus("page-tokens") {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for token in [text.as_str(), text.trim()] {
            for listing in LISTINGS {
                decode_holds(listing, token).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        // Seeds named `valid-*` are tokens the hub issued for the `entries` listing.
        assert_eq!(
            decode("entries", &text).is_ok_and(|key| key.is_some()),
            name.starts_with("valid-"),
            "{name}"
        );
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_page_tokens_are_refused_cleanly(listing in listing(), token in token_text()) {
        decode_holds(&listing, &token)?;
    }

    #[test]
    fn page_tokens_round_trip_and_stay_with_their_listing(listing in listing(), other in listing(), key in key()) {
        let token = encode(&listing, &key);
        prop_assert!(!token.is_empty());
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // A key with a control character is no key the hub writes (NUL cannot even reach
        // PostgreSQL), so such a token is forged.
        if key.chars().any(char::is_control) {
            prop_assert!(decode(&listing, &token).is_err());
        } else {
            prop_assert_eq!(decode(&listing, &token), Ok(Some(key.clone())));
        }
        if other != listing {
            prop_assert!(decode(&other, &token).is_err());
        }
    }

    #[test]
    fn next_token_only_when_more_follow(
        keys in prop::collection::vec("[0-9]{1,3}|\\PC{0,4}", 0..24),
        limit in prop_oneof![1u32..=24, Just(1000)],
        listing in listing(),
    ) {
        let mut page = keys.clone();
        let token = next_token(&listing, &mut page, limit, |k| k.as_str());
        if keys.len() > limit as usize {
            prop_assert_eq!(&page[..], &keys[..limit as usize]);
            let last = &keys[limit as usize - 1];
            if !last.chars().any(char::is_control) {
                prop_assert_eq!(decode(&listing, &token), Ok(Some(last.clone())));
            }
        } else {
            prop_assert_eq!(page, keys);
            prop_assert_eq!(token, "");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificate revocation lists

/// One development PKI for the whole test binary: a CA, the hub's certificate and key, and a
/// CRL naming one revoked department certificate.
fn dev_pki() -> &'static Path {
    static PKI: OnceLock<tempfile::TempDir> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        pki::init(dir.path(), &[]).expect("dev PKI");
        let department = pki::department_files(dir.path(), pki::SAMPLE_DEPARTMENTS[0].code);
        pki::revoke(dir.path(), &department.cert, None).expect("revoke");
        dir
    })
    .path()
}

/// The hub's TLS configuration with `crl` as its revocation list file.
fn load_with_crl(crl: &[u8]) -> Result<ServerTls, String> {
    let dir = dev_pki();
    let mut file = tempfile::NamedTempFile::new().expect("temporary file");
    file.write_all(crl).expect("write");
    let server = pki::server_files(dir);
    ServerTls::load(&pki::ca_cert_path(dir), &server.cert, &server.key, Some(file.path())).map_err(|e| e.to_string())
}

/// The dev PKI's list, as PEM and as DER.
fn real_crl() -> (Vec<u8>, Vec<u8>) {
    use rustls::pki_types::CertificateRevocationListDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(pki::crl_path(dev_pki())).expect("the CRL");
    let der = CertificateRevocationListDer::from_pem_slice(&pem).expect("PEM");
    (pem, der.as_ref().to_vec())
}

/// What a list says: its issuer, dates and revoked serial numbers.
#[derive(Debug, PartialEq)]
struct CrlContent {
    issuer: Vec<u8>,
    this_update: i64,
    next_update: Option<i64>,
    serials: Vec<Vec<u8>>,
}

fn crl_content(der: &[u8]) -> Option<CrlContent> {
    let (_, list) = x509_parser::parse_x509_crl(der).ok()?;
    Some(CrlContent {
        issuer: list.issuer().as_raw().to_vec(),
        this_update: list.last_update().timestamp(),
        next_update: list.next_update().map(|t| t.timestamp()),
        serials: list
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect(),
    })
}

/// A list the hub accepts says exactly what the CA signed: a changed byte is either refused or
/// one that changes nothing the list says (DER allows a few such encodings).
fn accepted_crl_is_the_signed_one(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(message) = load_with_crl(bytes) {
        prop_assert!(!message.is_empty());
        return Ok(());
    }
    use rustls::pki_types::CertificateRevocationListDer;
    use rustls::pki_types::pem::PemObject;
    let der = if bytes.first() == Some(&0x30) {
        bytes.to_vec()
    } else {
        CertificateRevocationListDer::from_pem_slice(bytes).map_or_else(|_| Vec::new(), |d| d.as_ref().to_vec())
    };
    let (_, original) = real_crl();
    prop_assert_eq!(
        crl_content(&der),
        crl_content(&original),
        "an altered list was accepted"
    );
    Ok(())
}

#[test]
fn the_real_crl_loads_as_pem_and_der() {
    let (pem, der) = real_crl();
    assert!(load_with_crl(&pem).is_ok());
    assert!(load_with_crl(&der).is_ok());
    let mut trailing = der.clone();
    trailing.push(0);
    assert!(load_with_crl(&trailing).is_err(), "bytes after a DER list");
    assert!(load_with_crl(&der[..der.len() - 1]).is_err(), "a truncated DER list");
}

#[test]
fn crl_corpus() {
    // Every seed is garbage or another CA's list: each must be refused, without a panic.
    for (name, bytes) in corpus("crl") {
        let refused = load_with_crl(&bytes);
        assert!(refused.is_err(), "{name} was accepted");
    }
}

/// PEM armour around anything: what a broken `openssl crl` pipeline or a hand edit produces.
fn pem_wrapped() -> impl Strategy<Value = Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    (
        prop::sample::select(vec!["X509 CRL", "CERTIFICATE", "PRIVATE KEY", "X509 CRL "]),
        prop::collection::vec(any::<u8>(), 0..600),
        prop::sample::select(vec!["\n", "\r\n", ""]),
    )
        .prop_map(|(label, body, eol)| {
            format!(
                "-----BEGIN {label}-----{eol}{}{eol}-----END {label}-----{eol}",
                STANDARD.encode(body)
            )
            .into_bytes()
        })
}

/// DER-looking bytes: a SEQUENCE tag and a length (short, long, indefinite, too long), nested.
fn der_like() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(
            prop::sample::select(vec![0x30u8, 0x02, 0x03, 0x04, 0x05, 0x06, 0x17, 0xa0]),
            1..8,
        ),
        prop::collection::vec(
            prop::sample::select(vec![
                vec![0x00],
                vec![0x7f],
                vec![0x80],
                vec![0x81, 0xff],
                vec![0x84, 0xff, 0xff, 0xff, 0xff],
                vec![0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            ]),
            1..8,
        ),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(tags, lengths, tail)| {
            let mut bytes = vec![0x30];
            for (tag, length) in tags.iter().zip(lengths.iter().cycle()) {
                bytes.extend(length);
                bytes.push(*tag);
            }
            bytes.extend(tail);
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    /// Garbage is an error, never a panic and never a configuration.
    #[test]
    fn arbitrary_crl_files_are_refused(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1024),
            pem_wrapped(),
            der_like(),
            "\\PC{0,200}".prop_map(String::into_bytes),
        ],
    ) {
        let outcome = load_with_crl(&bytes);
        prop_assert!(outcome.is_err(), "accepted {:?}", bytes);
    }

    /// The real list with one byte changed, inserted or removed, or cut short, as DER or PEM.
    #[test]
    fn altered_crls_are_refused_or_unchanged(
        pem in any::<bool>(),
        edit in 0u8..4,
        at in any::<Index>(),
        byte in any::<u8>(),
    ) {
        let (pem_bytes, der_bytes) = real_crl();
        let mut bytes = if pem { pem_bytes } else { der_bytes };
        let i = at.index(bytes.len());
        match edit {
            0 => bytes[i] ^= byte.max(1),
            1 => bytes.insert(i, byte),
            2 => {
                bytes.remove(i);
            }
            _ => bytes.truncate(i),
        }
        accepted_crl_is_the_signed_one(&bytes)?;
    }
}
