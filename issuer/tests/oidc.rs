//! OpenID Connect ID token verification through the public API, against a JWKS served over real
//! HTTP on loopback and JWKS files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aip_issuer::config::OidcSection;
use aip_issuer::oidc::{
    JwksSource, MAX_ID_TOKEN_BYTES, OidcError, OidcIdentity, OidcProvider, OidcVerifier, UserClaim,
};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

#[path = "support/keys.rs"]
mod keys;

use keys::{TestKey, aat_key, b64, jwks, sign_with_header};

const ISSUER: &str = "https://idp.example.com";
const AUDIENCE: &str = "aip-authority";
const NOW: i64 = 1_900_000_000;
const RSA_KID: &str = "rsa-1";

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// The committed RSA 2048 key (`tests/fixtures/oidc-rsa.pem`, PKCS#1).
fn rsa_key() -> TestKey {
    let pem = include_str!("fixtures/oidc-rsa.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    let encoding = EncodingKey::from_rsa_der(&der);
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!(RSA_KID);
    jwk["use"] = json!("sig");
    TestKey {
        alg: Algorithm::RS256,
        kid: RSA_KID.into(),
        encoding,
        jwk,
    }
}

fn es256_key(kid: &str) -> TestKey {
    aat_key(aip_aat::keys::Algorithm::ES256, kid)
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

fn header(key: &TestKey) -> Value {
    json!({ "alg": format!("{:?}", key.alg), "typ": "JWT", "kid": key.kid })
}

fn sign(claims: &Value, key: &TestKey) -> String {
    sign_with_header(&header(key), claims, key)
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "iat": NOW - 10,
        "exp": NOW + 300,
        "email": "alice@example.com",
    })
}

fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

// ---------------------------------------------------------------------------------------------
// A mock identity provider serving its JWKS over HTTP on loopback
// ---------------------------------------------------------------------------------------------

struct Idp {
    jwks: Mutex<Value>,
    requests: AtomicUsize,
}

impl Idp {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn publish(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }
}

async fn serve_jwks(State(idp): State<Arc<Idp>>) -> axum::Json<Value> {
    idp.requests.fetch_add(1, Ordering::SeqCst);
    axum::Json(idp.jwks.lock().unwrap().clone())
}

/// Starts the IdP; returns it and its base URL (`http://127.0.0.1:port`).
async fn start_idp(jwks: Value) -> (Arc<Idp>, String) {
    let idp = Arc::new(Idp {
        jwks: Mutex::new(jwks),
        requests: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/jwks", get(serve_jwks))
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database on fire at 10.1.2.3") }),
        )
        .route(
            "/huge",
            get(|| async { format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(300 * 1024)) }),
        )
        .route("/not-json", get(|| async { "<html>login</html>" }))
        .with_state(Arc::clone(&idp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (idp, format!("http://{addr}"))
}

fn provider(jwks: JwksSource) -> OidcProvider {
    OidcProvider {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks,
        user_claim: UserClaim::Sub,
        delegatable_tools: vec!["*".into()],
        id_jag: false,
        login: None,
    }
}

fn verifier(providers: Vec<OidcProvider>) -> OidcVerifier {
    OidcVerifier::new(providers, reqwest::Client::new()).unwrap()
}

/// An IdP publishing the RSA key, and a verifier trusting it by URL.
async fn rsa_setup() -> (Arc<Idp>, OidcVerifier, TestKey) {
    let key = rsa_key();
    let (idp, base) = start_idp(jwks(&[&key])).await;
    let verifier = verifier(vec![provider(JwksSource::Url(format!("{base}/jwks")))]);
    (idp, verifier, key)
}

async fn refused(verifier: &OidcVerifier, token: &str, now: i64) -> OidcError {
    let error = verifier.verify(token, now).await.unwrap_err();
    // Whatever the error, its message never carries the token or user claims.
    let message = error.to_string();
    assert!(token.len() < 8 || !message.contains(token), "{message}");
    assert!(
        !message.contains("user-123") && !message.contains("alice@"),
        "{message}"
    );
    error
}

// ---------------------------------------------------------------------------------------------
// Accepted tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rs256_from_url_jwks_gives_sub_and_iat() {
    let (idp, verifier, key) = rsa_setup().await;
    assert!(!verifier.is_empty());
    assert_eq!(
        idp.requests(),
        0,
        "URL key sets are fetched on first use, not at construction"
    );

    let token = sign(&claims_with(json!({"exp": NOW + 900})), &key);
    let identity = verifier.verify(&token, NOW).await.unwrap();
    assert_eq!(
        identity,
        OidcIdentity {
            user_id: "user-123".into(),
            auth_time: NOW - 10,
            issuer: ISSUER.into(),
            delegatable_tools: vec!["*".into()],
        }
    );
    assert_eq!(idp.requests(), 1);

    // Cached: no second fetch within the cache lifetime.
    verifier.verify(&token, NOW + 599).await.unwrap();
    assert_eq!(idp.requests(), 1);
    // Cache lifetime (10 min) over: fetched again.
    verifier.verify(&token, NOW + 600).await.unwrap();
    assert_eq!(idp.requests(), 2);
}

#[tokio::test]
async fn auth_time_claim_wins_over_iat() {
    let (_idp, verifier, key) = rsa_setup().await;
    let token = sign(&claims_with(json!({"auth_time": NOW - 3600})), &key);
    assert_eq!(verifier.verify(&token, NOW).await.unwrap().auth_time, NOW - 3600);

    let token = sign(&claims_with(json!({"auth_time": "yesterday"})), &key);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::InvalidClaim("auth_time")
    ));
}

#[tokio::test]
async fn audience_may_be_an_array() {
    let (_idp, verifier, key) = rsa_setup().await;
    let token = sign(&claims_with(json!({"aud": ["other-client", AUDIENCE]})), &key);
    verifier.verify(&token, NOW).await.unwrap();
}

#[tokio::test]
async fn email_user_claim() {
    let key = rsa_key();
    let (_idp, base) = start_idp(jwks(&[&key])).await;
    let verifier = verifier(vec![OidcProvider {
        user_claim: UserClaim::Email,
        delegatable_tools: vec!["search".into()],
        ..provider(JwksSource::Url(format!("{base}/jwks")))
    }]);

    let identity = verifier
        .verify(&sign(&claims_with(json!({"email_verified": true})), &key), NOW)
        .await
        .unwrap();
    assert_eq!(identity.user_id, "alice@example.com");
    assert_eq!(identity.delegatable_tools, vec!["search".to_owned()]);

    // Absent `email_verified`: the provider makes no statement; accepted.
    assert_eq!(
        verifier.verify(&sign(&claims(), &key), NOW).await.unwrap().user_id,
        "alice@example.com"
    );

    let unverified = sign(&claims_with(json!({"email_verified": false})), &key);
    assert!(matches!(
        refused(&verifier, &unverified, NOW).await,
        OidcError::EmailNotVerified
    ));
    let unverified = sign(&claims_with(json!({"email_verified": "false"})), &key);
    assert!(matches!(
        refused(&verifier, &unverified, NOW).await,
        OidcError::EmailNotVerified
    ));

    let no_email = sign(&claims_with(json!({"email": null})), &key);
    assert!(matches!(
        refused(&verifier, &no_email, NOW).await,
        OidcError::MissingClaim("email")
    ));
}

#[tokio::test]
async fn es256_and_eddsa_from_jwks_file() {
    let es = es256_key("ec-1");
    let ed = aat_key(aip_aat::keys::Algorithm::EdDSA, "ed-1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("idp.jwks.json"),
        serde_json::to_vec(&jwks(&[&es, &ed])).unwrap(),
    )
    .unwrap();

    // The relative path resolves against the authority directory.
    let section = OidcSection {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_file: Some("idp.jwks.json".into()),
        jwks_url: None,
        user_claim: Some("sub".into()),
        delegatable_tools: None,
        id_jag: None,
        login: None,
    };
    let provider = OidcProvider::from_section(0, &section, dir.path()).unwrap();
    assert_eq!(provider.jwks, JwksSource::File(dir.path().join("idp.jwks.json")));
    let verifier = verifier(vec![provider]);

    for key in [&es, &ed] {
        let identity = verifier.verify(&sign(&claims(), key), NOW).await.unwrap();
        assert_eq!(identity.user_id, "user-123");
    }

    // Without `kid`, the one key fitting the algorithm is used.
    let no_kid = sign_with_header(&json!({"alg": "ES256"}), &claims(), &es);
    verifier.verify(&no_kid, NOW).await.unwrap();

    // An ES256 header naming the Ed25519 key's kid: the key does not fit the algorithm.
    let mismatched = sign_with_header(&json!({"alg": "ES256", "kid": "ed-1"}), &claims(), &es);
    assert!(matches!(
        refused(&verifier, &mismatched, NOW).await,
        OidcError::KeyMismatch
    ));

    let unknown = sign_with_header(&json!({"alg": "ES256", "kid": "ec-9"}), &claims(), &es);
    assert!(matches!(refused(&verifier, &unknown, NOW).await, OidcError::UnknownKey));
}

// ---------------------------------------------------------------------------------------------
// Refused tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn untrusted_issuer() {
    let (idp, verifier, key) = rsa_setup().await;
    let token = sign(&claims_with(json!({"iss": "https://evil.example"})), &key);
    match refused(&verifier, &token, NOW).await {
        OidcError::UntrustedIssuer { issuer } => assert_eq!(issuer, "https://evil.example"),
        other => panic!("{other:?}"),
    }
    // Refused before any key is fetched.
    assert_eq!(idp.requests(), 0);

    // Exact match only: a trailing slash is another issuer.
    let token = sign(&claims_with(json!({"iss": format!("{ISSUER}/")})), &key);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::UntrustedIssuer { .. }
    ));

    let token = sign(&claims_with(json!({"iss": null})), &key);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::MissingClaim("iss")
    ));
}

#[tokio::test]
async fn wrong_audience() {
    let (_idp, verifier, key) = rsa_setup().await;
    let token = sign(&claims_with(json!({"aud": "another-client"})), &key);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::WrongAudience
    ));
    let token = sign(&claims_with(json!({"aud": ["a", "b"]})), &key);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::WrongAudience
    ));
    let token = sign(&claims_with(json!({"aud": null})), &key);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::MissingClaim("aud")
    ));
}

#[tokio::test]
async fn expiry_uses_the_given_time_with_60s_leeway() {
    let (_idp, verifier, key) = rsa_setup().await;
    let token = sign(&claims(), &key);
    let exp = NOW + 300;
    verifier.verify(&token, exp + 60).await.unwrap();
    assert!(matches!(refused(&verifier, &token, exp + 61).await, OidcError::Expired));

    let no_exp = sign(&claims_with(json!({"exp": null})), &key);
    assert!(matches!(
        refused(&verifier, &no_exp, NOW).await,
        OidcError::MissingClaim("exp")
    ));
}

#[tokio::test]
async fn not_yet_valid() {
    let (_idp, verifier, key) = rsa_setup().await;
    let token = sign(&claims_with(json!({"iat": NOW + 60})), &key);
    verifier.verify(&token, NOW).await.unwrap();
    let token = sign(&claims_with(json!({"iat": NOW + 61})), &key);
    assert!(matches!(refused(&verifier, &token, NOW).await, OidcError::NotYetValid));
    let token = sign(&claims_with(json!({"nbf": NOW + 120})), &key);
    assert!(matches!(refused(&verifier, &token, NOW).await, OidcError::NotYetValid));
    let token = sign(&claims_with(json!({"iat": null})), &key);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::MissingClaim("iat")
    ));
}

#[tokio::test]
async fn tampered_payload_fails_the_signature() {
    let (_idp, verifier, key) = rsa_setup().await;
    let token = sign(&claims(), &key);
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims_with(json!({"sub": "admin"}))),
        parts[2]
    );
    assert!(matches!(
        refused(&verifier, &forged, NOW).await,
        OidcError::BadSignature
    ));

    // A signature by another key under the trusted kid.
    let impostor = TestKey {
        kid: RSA_KID.into(),
        ..es256_key("x")
    };
    let token = sign_with_header(&json!({"alg": "RS256", "kid": RSA_KID}), &claims(), &rsa_key());
    verifier.verify(&token, NOW).await.unwrap();
    let token = sign_with_header(&json!({"alg": "ES256", "kid": RSA_KID}), &claims(), &impostor);
    assert!(matches!(refused(&verifier, &token, NOW).await, OidcError::KeyMismatch));
}

#[tokio::test]
async fn alg_none_and_hmac_are_refused() {
    let (_idp, verifier, key) = rsa_setup().await;
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "kid": RSA_KID})), b64(&claims()));
    assert!(matches!(
        refused(&verifier, &none, NOW).await,
        OidcError::UnsupportedAlgorithm
    ));

    // HS256 keyed with a secret, and the classic confusion: keyed with the RSA public JWK's `n`.
    for secret in [
        b"some shared secret".to_vec(),
        key.jwk["n"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let hmac = TestKey {
            alg: Algorithm::HS256,
            kid: RSA_KID.into(),
            encoding: EncodingKey::from_secret(&secret),
            jwk: json!({}),
        };
        let token = sign(&claims(), &hmac);
        assert!(matches!(
            refused(&verifier, &token, NOW).await,
            OidcError::UnsupportedAlgorithm
        ));
    }
}

#[tokio::test]
async fn critical_headers_and_malformed_tokens() {
    let (_idp, verifier, key) = rsa_setup().await;
    let crit = sign_with_header(
        &json!({"alg": "RS256", "kid": RSA_KID, "crit": ["b64"], "b64": false}),
        &claims(),
        &key,
    );
    assert!(matches!(
        refused(&verifier, &crit, NOW).await,
        OidcError::UnsupportedCritical
    ));

    for junk in ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
        let error = refused(&verifier, junk, NOW).await;
        assert!(
            matches!(
                error,
                OidcError::Malformed | OidcError::UnsupportedAlgorithm | OidcError::MissingClaim(_)
            ),
            "{junk}: {error:?}"
        );
    }
}

#[tokio::test]
async fn bad_user_ids() {
    let (_idp, verifier, key) = rsa_setup().await;
    for sub in [json!(""), json!("a\nb"), json!("x".repeat(257)), json!(42)] {
        let token = sign(&claims_with(json!({ "sub": sub })), &key);
        assert!(
            matches!(refused(&verifier, &token, NOW).await, OidcError::InvalidClaim("sub")),
            "{sub}"
        );
    }
    let token = sign(&claims_with(json!({"sub": "x".repeat(256)})), &key);
    verifier.verify(&token, NOW).await.unwrap();
    let token = sign(&claims_with(json!({"sub": null})), &key);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::MissingClaim("sub")
    ));
}

#[tokio::test]
async fn oversized_token() {
    let (idp, verifier, key) = rsa_setup().await;
    let token = sign(&claims_with(json!({"filler": "x".repeat(MAX_ID_TOKEN_BYTES)})), &key);
    assert!(token.len() > MAX_ID_TOKEN_BYTES);
    assert!(matches!(refused(&verifier, &token, NOW).await, OidcError::TooLarge));
    assert_eq!(idp.requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// Key rotation and fetch limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rotated_key_is_picked_up_with_at_most_one_fetch_per_30s() {
    let (idp, verifier, rsa) = rsa_setup().await;
    verifier.verify(&sign(&claims(), &rsa), NOW).await.unwrap();
    assert_eq!(idp.requests(), 1);

    // The IdP rotates in a new key after the first fetch.
    let rotated = es256_key("ec-2");
    idp.publish(jwks(&[&rsa, &rotated]));
    let token = sign(&claims(), &rotated);

    // 10 s after the last fetch: too soon to fetch again.
    assert!(matches!(
        refused(&verifier, &token, NOW + 10).await,
        OidcError::UnknownKey
    ));
    assert_eq!(idp.requests(), 1);

    // 30 s after the last fetch: one refetch, and the rotated key verifies.
    assert_eq!(verifier.verify(&token, NOW + 30).await.unwrap().user_id, "user-123");
    assert_eq!(idp.requests(), 2);

    // A flood of unknown kids within the next 30 s does not reach the IdP.
    for i in 0..20 {
        let bogus = sign_with_header(
            &json!({"alg": "ES256", "kid": format!("bogus-{i}")}),
            &claims(),
            &rotated,
        );
        assert!(matches!(
            refused(&verifier, &bogus, NOW + 31 + i).await,
            OidcError::UnknownKey
        ));
    }
    assert_eq!(idp.requests(), 2);

    // Once the 30 s are over, the next unknown kid may refetch once.
    let bogus = sign_with_header(&json!({"alg": "ES256", "kid": "bogus"}), &claims(), &rotated);
    assert!(matches!(
        refused(&verifier, &bogus, NOW + 60).await,
        OidcError::UnknownKey
    ));
    assert!(matches!(
        refused(&verifier, &bogus, NOW + 61).await,
        OidcError::UnknownKey
    ));
    assert_eq!(idp.requests(), 3);
}

#[tokio::test]
async fn concurrent_first_use_fetches_once() {
    let (idp, verifier, key) = rsa_setup().await;
    let verifier = Arc::new(verifier);
    let token = sign(&claims(), &key);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (verifier, token) = (Arc::clone(&verifier), token.clone());
            tokio::spawn(async move { verifier.verify(&token, NOW).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(idp.requests(), 1);
}

#[tokio::test]
async fn unavailable_jwks_hides_transport_details() {
    let key = rsa_key();
    let (_idp, base) = start_idp(jwks(&[&key])).await;
    let token = sign(&claims(), &key);
    for path in ["broken", "huge", "not-json", "missing"] {
        let verifier = verifier(vec![provider(JwksSource::Url(format!("{base}/{path}")))]);
        let error = refused(&verifier, &token, NOW).await;
        assert!(matches!(error, OidcError::JwksUnavailable), "{path}: {error:?}");
        let message = error.to_string();
        assert!(
            !message.contains("127.0.0.1") && !message.contains("10.1.2.3") && !message.contains("500"),
            "{message}"
        );
    }

    // Nothing listening: connection refused, also JwksUnavailable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let verifier = verifier(vec![provider(JwksSource::Url(url))]);
    assert!(matches!(
        refused(&verifier, &token, NOW).await,
        OidcError::JwksUnavailable
    ));
}

#[tokio::test]
async fn stale_keys_survive_a_failed_refresh() {
    let key = rsa_key();
    let (idp, base) = start_idp(jwks(&[&key])).await;
    let verifier = verifier(vec![provider(JwksSource::Url(format!("{base}/jwks")))]);
    verifier.verify(&sign(&claims(), &key), NOW).await.unwrap();

    // The IdP now serves garbage; after the cache lifetime the refresh fails, and the previous
    // keys are still used (for up to an hour).
    idp.publish(json!({"not": "a jwks"}));
    let later = sign(&claims_with(json!({"exp": NOW + 7200})), &key);
    verifier.verify(&later, NOW + 700).await.unwrap();
    assert_eq!(idp.requests(), 2);
    verifier.verify(&later, NOW + 3600).await.unwrap();
    assert!(matches!(
        refused(&verifier, &later, NOW + 3700).await,
        OidcError::JwksUnavailable
    ));
}

// ---------------------------------------------------------------------------------------------
// Construction and configuration
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_providers() {
    let verifier = verifier(Vec::new());
    assert!(verifier.is_empty());
    let token = sign(&claims(), &rsa_key());
    assert!(matches!(
        verifier.verify(&token, NOW).await.unwrap_err(),
        OidcError::NoProviders
    ));
}

#[test]
fn jwks_file_errors_at_construction() {
    let dir = tempfile::tempdir().unwrap();
    let build = |path: &Path| OidcVerifier::new(vec![provider(JwksSource::File(path.into()))], reqwest::Client::new());

    assert!(matches!(
        build(&dir.path().join("absent.json")),
        Err(OidcError::JwksFileUnreadable { .. })
    ));

    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, "not json").unwrap();
    assert!(matches!(build(&invalid), Err(OidcError::JwksFileInvalid { .. })));

    // Only a symmetric key: nothing usable for ID tokens.
    let hmac_only = dir.path().join("hmac.json");
    std::fs::write(
        &hmac_only,
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h","alg":"HS256"}]}"#,
    )
    .unwrap();
    assert!(matches!(build(&hmac_only), Err(OidcError::JwksFileInvalid { .. })));

    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec(&jwks(&[&rsa_key()])).unwrap()).unwrap();
    build(&good).unwrap();

    let twice = OidcVerifier::new(
        vec![
            provider(JwksSource::File(good.clone())),
            provider(JwksSource::File(good)),
        ],
        reqwest::Client::new(),
    );
    assert!(matches!(twice, Err(OidcError::DuplicateIssuer { .. })));
}

fn section(change: impl FnOnce(&mut OidcSection)) -> Result<OidcProvider, String> {
    let mut section = OidcSection {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_file: None,
        jwks_url: Some("https://idp.example.com/.well-known/jwks.json".into()),
        user_claim: None,
        delegatable_tools: None,
        id_jag: None,
        login: None,
    };
    change(&mut section);
    OidcProvider::from_section(2, &section, Path::new("/srv/aip"))
}

#[test]
fn from_section_defaults() {
    let provider = section(|_| {}).unwrap();
    assert_eq!(provider.issuer, ISSUER);
    assert_eq!(provider.audience, AUDIENCE);
    assert_eq!(
        provider.jwks,
        JwksSource::Url("https://idp.example.com/.well-known/jwks.json".into())
    );
    assert_eq!(provider.user_claim, UserClaim::Sub);
    assert_eq!(provider.delegatable_tools, vec!["*".to_owned()]);

    let provider = section(|s| {
        s.user_claim = Some("email".into());
        s.delegatable_tools = Some(vec!["search".into()]);
    })
    .unwrap();
    assert_eq!(provider.user_claim, UserClaim::Email);
    assert_eq!(provider.delegatable_tools, vec!["search".to_owned()]);

    for url in [
        "http://127.0.0.1:9000/jwks",
        "http://[::1]/jwks",
        "http://localhost/jwks",
    ] {
        section(|s| s.jwks_url = Some(url.into())).unwrap();
    }

    let provider = section(|s| {
        s.jwks_url = None;
        s.jwks_file = Some("idp/jwks.json".into());
    })
    .unwrap();
    assert_eq!(provider.jwks, JwksSource::File("/srv/aip/idp/jwks.json".into()));
    let provider = section(|s| {
        s.jwks_url = None;
        s.jwks_file = Some("/etc/idp.json".into());
    })
    .unwrap();
    assert_eq!(provider.jwks, JwksSource::File("/etc/idp.json".into()));
}

#[test]
fn from_section_errors_name_the_member() {
    let both = section(|s| s.jwks_file = Some("jwks.json".into())).unwrap_err();
    assert!(
        both.starts_with("issuer.oidc[2]") && both.contains("exactly one"),
        "{both}"
    );
    let neither = section(|s| s.jwks_url = None).unwrap_err();
    assert!(
        neither.starts_with("issuer.oidc[2]") && neither.contains("exactly one"),
        "{neither}"
    );

    for url in [
        "http://idp.example.com/jwks",
        "http://10.0.0.1/jwks",
        "ftp://idp.example.com/jwks",
        "not a url",
    ] {
        let error = section(|s| s.jwks_url = Some(url.into())).unwrap_err();
        assert!(error.starts_with("issuer.oidc[2].jwks_url: "), "{error}");
    }

    let error = section(|s| s.user_claim = Some("name".into())).unwrap_err();
    assert!(error.starts_with("issuer.oidc[2].user_claim: "), "{error}");
    let error = section(|s| s.issuer = String::new()).unwrap_err();
    assert!(error.starts_with("issuer.oidc[2].issuer: "), "{error}");
    let error = section(|s| s.audience = " ".into()).unwrap_err();
    assert!(error.starts_with("issuer.oidc[2].audience: "), "{error}");
    let error = section(|s| s.delegatable_tools = Some(vec![String::new()])).unwrap_err();
    assert!(error.starts_with("issuer.oidc[2].delegatable_tools: "), "{error}");
}

#[tokio::test]
async fn sign_in_tokens_need_the_login_audience_and_the_nonce() {
    let (_idp, verifier, key) = rsa_setup().await;
    const CLIENT: &str = "aip-login";
    let login = |changes: Value| {
        sign(
            &claims_with(json!({"aud": CLIENT, "nonce": "n-1"})).merge(changes),
            &key,
        )
    };
    let identity = verifier
        .verify_login(&login(json!({})), ISSUER, CLIENT, "n-1", NOW)
        .await
        .unwrap();
    assert_eq!(identity.user_id, "user-123");
    // `azp`, when present, must be the client.
    verifier
        .verify_login(&login(json!({"azp": CLIENT})), ISSUER, CLIENT, "n-1", NOW)
        .await
        .unwrap();
    let check = |token: String, issuer: &'static str| {
        let verifier = &verifier;
        async move {
            verifier
                .verify_login(&token, issuer, CLIENT, "n-1", NOW)
                .await
                .unwrap_err()
        }
    };
    assert!(matches!(
        check(login(json!({"nonce": "n-2"})), ISSUER).await,
        OidcError::NonceMismatch
    ));
    assert!(matches!(
        check(login(json!({"nonce": null})), ISSUER).await,
        OidcError::NonceMismatch
    ));
    assert!(matches!(
        check(login(json!({"azp": "other"})), ISSUER).await,
        OidcError::WrongAudience
    ));
    // The agents' audience is not the sign-in's, and the other way round.
    let for_agents = sign(&claims_with(json!({"nonce": "n-1"})), &key);
    assert!(matches!(check(for_agents, ISSUER).await, OidcError::WrongAudience));
    assert!(matches!(
        refused(&verifier, &login(json!({})), NOW).await,
        OidcError::WrongAudience
    ));
    // Another trusted issuer than the one the sign-in went to.
    assert!(matches!(
        check(login(json!({})), "https://other.example").await,
        OidcError::UntrustedIssuer { .. }
    ));
    // Times are checked as for any ID token.
    assert!(matches!(
        check(login(json!({"exp": NOW - 3_600})), ISSUER).await,
        OidcError::Expired
    ));
}

trait Merge {
    fn merge(self, changes: Value) -> Value;
}

impl Merge for Value {
    fn merge(mut self, changes: Value) -> Value {
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                self.as_object_mut().unwrap().remove(name);
            } else {
                self[name] = value.clone();
            }
        }
        self
    }
}
