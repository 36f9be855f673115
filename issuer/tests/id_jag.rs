//! Identity Assertion JWT Authorization Grants (ID-JAG) through the public API: keys made here,
//! key sets in files and served over real HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aip_issuer::config::OidcSection;
use aip_issuer::oidc::{
    CLOCK_LEEWAY_SECS, ID_JAG_TYP, IdJag, JwksSource, MAX_ID_JAG_LIFETIME_SECS, OidcError, OidcProvider, OidcVerifier,
    UserClaim,
};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

#[path = "support/keys.rs"]
mod keys;

use keys::{TestKey, aat_key, b64, jwks, sign_with_header};

/// The IdP that may issue ID-JAGs.
const IDP: &str = "https://idp.example.com";
/// An IdP trusted for ID tokens only.
const SSO_ONLY_IDP: &str = "https://sso.example.com";
/// This authority's issuer identifier (`IssuerSettings::issuer_id`: `public_url` without `/`).
const AUTHORITY: &str = "https://aip.example.com:8443";
const AGENT: &str = "agent-7f3c";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const NOW: i64 = 1_900_000_000;

// ---------------------------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------------------------

fn es256(kid: &str) -> TestKey {
    aat_key(aip_aat::keys::Algorithm::ES256, kid)
}

fn eddsa(kid: &str) -> TestKey {
    aat_key(aip_aat::keys::Algorithm::EdDSA, kid)
}

fn header(key: &TestKey) -> Value {
    json!({ "alg": format!("{:?}", key.alg), "typ": ID_JAG_TYP, "kid": key.kid })
}

fn sign(claims: &Value, key: &TestKey) -> String {
    sign_with_header(&header(key), claims, key)
}

/// The claims of a valid grant, as in the draft's example.
fn claims() -> Value {
    json!({
        "jti": "9e43f81b64a33f20116179",
        "iss": IDP,
        "sub": "U019488227",
        "aud": AUTHORITY,
        "client_id": AGENT,
        "exp": NOW + 300,
        "iat": NOW - 10,
        "resource": RESOURCE,
        "scope": "read_file list_directory",
        "auth_time": NOW - 600,
        "amr": ["mfa", "hwk"],
        "email": "alice@example.com",
    })
}

/// `claims()` with members replaced, or removed where the new value is `null`.
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
// Providers and verifiers
// ---------------------------------------------------------------------------------------------

fn provider(issuer: &str, jwks: JwksSource, id_jag: bool) -> OidcProvider {
    OidcProvider {
        issuer: issuer.into(),
        audience: "aip-authority".into(),
        jwks,
        user_claim: UserClaim::Sub,
        delegatable_tools: vec!["read_file".into()],
        id_jag,
        login: None,
    }
}

/// Writes a JWKS file and returns its source.
fn jwks_file(dir: &Path, name: &str, jwks: &Value) -> JwksSource {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(jwks).unwrap()).unwrap();
    JwksSource::File(path)
}

/// The IdP (`id_jag = true`, signing with `key`) and an SSO-only IdP (signing with `sso_key`),
/// both with key set files.
struct Setup {
    _dir: tempfile::TempDir,
    verifier: OidcVerifier,
    key: TestKey,
    sso_key: TestKey,
}

fn setup() -> Setup {
    setup_with(|p| p)
}

fn setup_with(change: impl FnOnce(OidcProvider) -> OidcProvider) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = es256("idp-1");
    let sso_key = eddsa("sso-1");
    let idp = provider(IDP, jwks_file(dir.path(), "idp.json", &jwks(&[&key])), true);
    let sso = provider(
        SSO_ONLY_IDP,
        jwks_file(dir.path(), "sso.json", &jwks(&[&sso_key])),
        false,
    );
    let verifier = OidcVerifier::new(vec![change(idp), sso], reqwest::Client::new()).unwrap();
    Setup {
        _dir: dir,
        verifier,
        key,
        sso_key,
    }
}

async fn verify(setup: &Setup, token: &str) -> Result<IdJag, OidcError> {
    setup.verifier.verify_id_jag(token, AUTHORITY, NOW).await
}

/// The refusal for `token`, whose message never carries the token or user claims.
async fn refused(setup: &Setup, token: &str) -> OidcError {
    let error = verify(setup, token).await.unwrap_err();
    let message = error.to_string();
    assert!(token.len() < 8 || !message.contains(token), "{message}");
    for secret in ["U019488227", "alice@", AGENT, "9e43f81b"] {
        assert!(!message.contains(secret), "{message}");
    }
    error
}

fn expected() -> IdJag {
    IdJag {
        issuer: IDP.into(),
        user_id: "U019488227".into(),
        auth_time: NOW - 600,
        client_id: AGENT.into(),
        jti: "9e43f81b64a33f20116179".into(),
        exp: NOW + 300,
        resource: Some(RESOURCE.into()),
        scopes: vec!["read_file".into(), "list_directory".into()],
        cnf_jkt: None,
        delegatable_tools: vec!["read_file".into()],
    }
}

// ---------------------------------------------------------------------------------------------
// Accepted grants
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_grant() {
    let s = setup();
    assert!(s.verifier.accepts_id_jag());
    assert_eq!(verify(&s, &sign(&claims(), &s.key)).await.unwrap(), expected());
}

#[tokio::test]
async fn optional_claims_and_their_forms() {
    let s = setup();
    // Minimal: no resource, scope, auth_time (defaults to iat), cnf.
    let minimal = claims_with(json!({"resource": null, "scope": null, "auth_time": null, "amr": null}));
    let grant = verify(&s, &sign(&minimal, &s.key)).await.unwrap();
    assert_eq!(grant.resource, None);
    assert!(grant.scopes.is_empty());
    assert_eq!(grant.auth_time, NOW - 10);

    // `aud` and `resource` as one-element arrays; `aud` with the origin's trailing slash.
    let arrays = claims_with(json!({"aud": [format!("{AUTHORITY}/")], "resource": [RESOURCE]}));
    assert_eq!(verify(&s, &sign(&arrays, &s.key)).await.unwrap(), expected());

    // `typ` as a full media type, in any case.
    for typ in ["application/oauth-id-jag+jwt", "OAUTH-ID-JAG+JWT"] {
        let token = sign_with_header(&json!({"alg": "ES256", "typ": typ, "kid": "idp-1"}), &claims(), &s.key);
        verify(&s, &token).await.unwrap();
    }

    // A key-bound grant.
    let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    let bound = claims_with(json!({"cnf": {"jkt": jkt}}));
    assert_eq!(
        verify(&s, &sign(&bound, &s.key)).await.unwrap().cnf_jkt.as_deref(),
        Some(jkt)
    );

    // Claims this authority does not use are ignored (acr, amr, tenant, act, …).
    let extra = claims_with(json!({"acr": "phr", "tenant": "acme", "act": {"sub": "bot"}}));
    verify(&s, &sign(&extra, &s.key)).await.unwrap();
}

#[tokio::test]
async fn email_as_the_user_id() {
    let s = setup_with(|p| OidcProvider {
        user_claim: UserClaim::Email,
        ..p
    });
    let grant = verify(&s, &sign(&claims_with(json!({"email_verified": true})), &s.key))
        .await
        .unwrap();
    assert_eq!(grant.user_id, "alice@example.com");

    let unverified = claims_with(json!({"email_verified": false}));
    assert!(matches!(
        refused(&s, &sign(&unverified, &s.key)).await,
        OidcError::EmailNotVerified
    ));
    // `sub` stays required even when the user is named by `email`.
    let no_sub = claims_with(json!({"sub": null}));
    assert!(matches!(
        refused(&s, &sign(&no_sub, &s.key)).await,
        OidcError::MissingClaim("sub")
    ));
}

#[tokio::test]
async fn jwks_served_over_http_on_loopback() {
    struct Idp {
        jwks: Value,
        requests: AtomicUsize,
    }
    async fn serve(State(idp): State<Arc<Idp>>) -> axum::Json<Value> {
        idp.requests.fetch_add(1, Ordering::SeqCst);
        axum::Json(idp.jwks.clone())
    }
    let key = eddsa("ed-rot-2");
    let idp = Arc::new(Idp {
        jwks: jwks(&[&es256("old-1"), &key]),
        requests: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/.well-known/jwks.json", get(serve))
        .with_state(Arc::clone(&idp));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Configured the way aip.toml says it, through the validated section.
    let section = OidcSection {
        issuer: IDP.into(),
        audience: "aip-authority".into(),
        jwks_file: None,
        jwks_url: Some(format!("http://{addr}/.well-known/jwks.json")),
        user_claim: None,
        delegatable_tools: Some(vec!["read_file".into()]),
        id_jag: Some(true),
        login: None,
    };
    let provider = OidcProvider::from_section(0, &section, Path::new("/srv/aip")).unwrap();
    assert!(provider.id_jag);
    let verifier = OidcVerifier::new(vec![provider], reqwest::Client::new()).unwrap();
    assert_eq!(idp.requests.load(Ordering::SeqCst), 0, "fetched on first use");

    let grant = verifier
        .verify_id_jag(&sign(&claims(), &key), AUTHORITY, NOW)
        .await
        .unwrap();
    assert_eq!(grant, expected());
    assert_eq!(idp.requests.load(Ordering::SeqCst), 1);

    // A second grant within the cache lifetime: no second fetch.
    let again = claims_with(json!({"jti": "second"}));
    verifier
        .verify_id_jag(&sign(&again, &key), AUTHORITY, NOW + 5)
        .await
        .unwrap();
    assert_eq!(idp.requests.load(Ordering::SeqCst), 1);

    // A foreign key under an unknown kid: one refetch (the cooldown has passed), then refused.
    let foreign = eddsa("ed-rot-3");
    assert!(matches!(
        verifier
            .verify_id_jag(&sign(&claims(), &foreign), AUTHORITY, NOW + 40)
            .await
            .unwrap_err(),
        OidcError::UnknownKey
    ));
    assert_eq!(idp.requests.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// Refused grants
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn foreign_signature() {
    let s = setup();
    // Another key under the trusted kid: the signature does not verify.
    let impostor = TestKey {
        kid: "idp-1".into(),
        ..es256("x")
    };
    assert!(matches!(
        refused(&s, &sign(&claims(), &impostor)).await,
        OidcError::BadSignature
    ));
    // Another key under its own kid: not in the IdP's key set.
    assert!(matches!(
        refused(&s, &sign(&claims(), &es256("elsewhere"))).await,
        OidcError::UnknownKey
    ));
    // The SSO-only IdP's key, claiming to be the IdP.
    assert!(matches!(
        refused(&s, &sign(&claims(), &s.sso_key)).await,
        OidcError::UnknownKey
    ));
    // A tampered payload.
    let token = sign(&claims(), &s.key);
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims_with(json!({"sub": "admin"}))),
        parts[2]
    );
    assert!(matches!(refused(&s, &forged).await, OidcError::BadSignature));
}

#[tokio::test]
async fn wrong_audience() {
    let s = setup();
    for aud in [
        json!("https://other-as.example.com"),
        json!("aip-authority"),
        json!(format!("{AUTHORITY}/x")),
        json!(format!("{AUTHORITY}//")),
        json!("https://AIP.example.com:8443"),
        json!([AUTHORITY, "https://other-as.example.com"]),
        json!([AUTHORITY, AUTHORITY]),
        json!([]),
        json!([7]),
    ] {
        let token = sign(&claims_with(json!({ "aud": aud })), &s.key);
        assert!(matches!(refused(&s, &token).await, OidcError::WrongAudience), "{aud}");
    }
    let token = sign(&claims_with(json!({"aud": null})), &s.key);
    assert!(matches!(refused(&s, &token).await, OidcError::MissingClaim("aud")));

    // The issuer identifier is compared as given: with a path, no trailing-slash tolerance.
    let token = sign(&claims_with(json!({"aud": "https://aip.example.com/t1/"})), &s.key);
    s.verifier
        .verify_id_jag(&token, "https://aip.example.com/t1/", NOW)
        .await
        .unwrap();
    assert!(matches!(
        s.verifier
            .verify_id_jag(&token, "https://aip.example.com/t1", NOW)
            .await
            .unwrap_err(),
        OidcError::WrongAudience
    ));
}

#[tokio::test]
async fn issuer_must_be_enabled_for_id_jag() {
    let s = setup();
    // Trusted for ID tokens, signed with its own key, but not enabled for ID-JAGs.
    let sso = claims_with(json!({"iss": SSO_ONLY_IDP}));
    match refused(&s, &sign(&sso, &s.sso_key)).await {
        OidcError::IdJagNotEnabled { issuer } => assert_eq!(issuer, SSO_ONLY_IDP),
        other => panic!("{other:?}"),
    }
    // Unknown, or only almost the same string.
    for iss in [
        "https://evil.example",
        "https://idp.example.com/",
        "HTTPS://idp.example.com",
    ] {
        let token = sign(&claims_with(json!({ "iss": iss })), &s.key);
        assert!(
            matches!(refused(&s, &token).await, OidcError::UntrustedIssuer { .. }),
            "{iss}"
        );
    }
    let token = sign(&claims_with(json!({"iss": null})), &s.key);
    assert!(matches!(refused(&s, &token).await, OidcError::MissingClaim("iss")));
}

#[tokio::test]
async fn no_provider_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let key = es256("idp-1");
    let verifier = OidcVerifier::new(
        vec![provider(IDP, jwks_file(dir.path(), "k.json", &jwks(&[&key])), false)],
        reqwest::Client::new(),
    )
    .unwrap();
    assert!(!verifier.accepts_id_jag());
    assert!(matches!(
        verifier
            .verify_id_jag(&sign(&claims(), &key), AUTHORITY, NOW)
            .await
            .unwrap_err(),
        OidcError::NoIdJagProviders
    ));
    let empty = OidcVerifier::new(Vec::new(), reqwest::Client::new()).unwrap();
    assert!(matches!(
        empty
            .verify_id_jag(&sign(&claims(), &key), AUTHORITY, NOW)
            .await
            .unwrap_err(),
        OidcError::NoIdJagProviders
    ));
}

#[tokio::test]
async fn wrong_or_missing_typ() {
    let s = setup();
    for header in [
        json!({"alg": "ES256", "kid": "idp-1"}),
        json!({"alg": "ES256", "kid": "idp-1", "typ": "JWT"}),
        json!({"alg": "ES256", "kid": "idp-1", "typ": "at+jwt"}),
        json!({"alg": "ES256", "kid": "idp-1", "typ": "oauth-id-jag"}),
        json!({"alg": "ES256", "kid": "idp-1", "typ": "oauth-id-jag+jwt; v=1"}),
    ] {
        let token = sign_with_header(&header, &claims(), &s.key);
        assert!(matches!(refused(&s, &token).await, OidcError::NotAnIdJag), "{header}");
    }
    let token = sign_with_header(&json!({"alg": "ES256", "kid": "idp-1", "typ": 1}), &claims(), &s.key);
    assert!(matches!(refused(&s, &token).await, OidcError::Malformed));
}

#[tokio::test]
async fn an_id_jag_is_not_an_id_token_and_back() {
    let s = setup();
    // The same IdP, an ID token for the authority as relying party: not a grant.
    let id_token_claims = claims_with(json!({"aud": "aip-authority"}));
    let id_token = sign_with_header(
        &json!({"alg": "ES256", "typ": "JWT", "kid": "idp-1"}),
        &id_token_claims,
        &s.key,
    );
    s.verifier.verify(&id_token, NOW).await.unwrap();
    assert!(matches!(refused(&s, &id_token).await, OidcError::NotAnIdJag));

    // An ID-JAG, even one whose `aud` happens to be the ID token audience, is not an ID token.
    let grant = sign(&id_token_claims, &s.key);
    assert!(matches!(
        s.verifier.verify(&grant, NOW).await.unwrap_err(),
        OidcError::NotAnIdToken
    ));
}

#[tokio::test]
async fn alg_none_and_hmac_are_refused() {
    // The IdP's key set holds a symmetric key too; it is never used.
    let dir = tempfile::tempdir().unwrap();
    let key = es256("idp-1");
    let secret = b"0123456789abcdef0123456789abcdef";
    let mut set = jwks(&[&key]);
    set["keys"].as_array_mut().unwrap().push(json!({
        "kty": "oct", "kid": "hmac-1", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret),
    }));
    let verifier = OidcVerifier::new(
        vec![provider(IDP, jwks_file(dir.path(), "k.json", &set), true)],
        reqwest::Client::new(),
    )
    .unwrap();
    let refuse = |token: String| {
        let verifier = &verifier;
        async move { verifier.verify_id_jag(&token, AUTHORITY, NOW).await.unwrap_err() }
    };

    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": ID_JAG_TYP})),
        b64(&claims())
    );
    assert!(matches!(refuse(none).await, OidcError::UnsupportedAlgorithm));

    for kid in ["hmac-1", "idp-1"] {
        let hmac = TestKey {
            alg: Algorithm::HS256,
            kid: kid.into(),
            encoding: EncodingKey::from_secret(secret),
            jwk: json!({}),
        };
        assert!(matches!(
            refuse(sign(&claims(), &hmac)).await,
            OidcError::UnsupportedAlgorithm
        ));
    }
    for alg in ["HS384", "HS512", "ES512", "RS1", ""] {
        let token = sign_with_header(&json!({"alg": alg, "typ": ID_JAG_TYP, "kid": "idp-1"}), &claims(), &key);
        assert!(matches!(refuse(token).await, OidcError::UnsupportedAlgorithm), "{alg}");
    }
    // The ES256 key still works beside it.
    verifier
        .verify_id_jag(&sign(&claims(), &key), AUTHORITY, NOW)
        .await
        .unwrap();
}

#[tokio::test]
async fn expiry_and_times() {
    let s = setup();
    let token = sign(&claims(), &s.key);
    let exp = NOW + 300;
    s.verifier
        .verify_id_jag(&token, AUTHORITY, exp + CLOCK_LEEWAY_SECS)
        .await
        .unwrap();
    assert!(matches!(
        s.verifier
            .verify_id_jag(&token, AUTHORITY, exp + CLOCK_LEEWAY_SECS + 1)
            .await
            .unwrap_err(),
        OidcError::Expired
    ));

    let expired = sign(&claims_with(json!({"exp": NOW - 61, "iat": NOW - 200})), &s.key);
    assert!(matches!(refused(&s, &expired).await, OidcError::Expired));

    for (changes, error) in [(json!({"exp": null}), "exp"), (json!({"iat": null}), "iat")] {
        let token = sign(&claims_with(changes), &s.key);
        match refused(&s, &token).await {
            OidcError::MissingClaim(claim) => assert_eq!(claim, error),
            other => panic!("{other:?}"),
        }
    }
    for changes in [
        json!({"iat": NOW + 61}),
        json!({"nbf": NOW + 61}),
        json!({"auth_time": NOW + 61}),
    ] {
        let token = sign(&claims_with(changes.clone()), &s.key);
        assert!(matches!(refused(&s, &token).await, OidcError::NotYetValid), "{changes}");
    }
    let token = sign(&claims_with(json!({"exp": "soon"})), &s.key);
    assert!(matches!(refused(&s, &token).await, OidcError::InvalidClaim("exp")));

    // At most an hour from iat to exp.
    let long = claims_with(json!({"iat": NOW, "exp": NOW + MAX_ID_JAG_LIFETIME_SECS}));
    verify(&s, &sign(&long, &s.key)).await.unwrap();
    let longer = claims_with(json!({"iat": NOW, "exp": NOW + MAX_ID_JAG_LIFETIME_SECS + 1}));
    assert!(matches!(
        refused(&s, &sign(&longer, &s.key)).await,
        OidcError::LifetimeTooLong
    ));
}

#[tokio::test]
async fn required_claims() {
    let s = setup();
    for name in ["jti", "client_id", "sub"] {
        let token = sign(&claims_with(json!({ name: null })), &s.key);
        match refused(&s, &token).await {
            OidcError::MissingClaim(claim) => assert_eq!(claim, name),
            other => panic!("{name}: {other:?}"),
        }
        for bad in [json!(""), json!(7), json!(["x"]), json!("a\u{0}b")] {
            let token = sign(&claims_with(json!({ name: bad })), &s.key);
            match refused(&s, &token).await {
                OidcError::InvalidClaim(claim) => assert_eq!(claim, name),
                // jsonwebtoken reads `sub` itself and gives up on an array.
                OidcError::Malformed if name == "sub" && bad.is_array() => {}
                other => panic!("{name} = {bad}: {other:?}"),
            }
        }
    }
    let long_jti = sign(&claims_with(json!({"jti": "j".repeat(1025)})), &s.key);
    assert!(matches!(refused(&s, &long_jti).await, OidcError::InvalidClaim("jti")));
}

#[tokio::test]
async fn resource_scope_and_unsupported_claims() {
    let s = setup();
    let two = sign(
        &claims_with(json!({"resource": [RESOURCE, "https://other.example.com/mcp"]})),
        &s.key,
    );
    assert!(matches!(refused(&s, &two).await, OidcError::MultipleResources));
    for bad in [json!([]), json!("not a uri"), json!(42)] {
        let token = sign(&claims_with(json!({ "resource": bad })), &s.key);
        assert!(
            matches!(refused(&s, &token).await, OidcError::InvalidClaim("resource")),
            "{bad}"
        );
    }
    for bad in [json!(["read_file"]), json!("read\"file")] {
        let token = sign(&claims_with(json!({ "scope": bad })), &s.key);
        assert!(
            matches!(refused(&s, &token).await, OidcError::InvalidClaim("scope")),
            "{bad}"
        );
    }
    let rar = claims_with(json!({"authorization_details": [{"type": "tools", "actions": ["read_file"]}]}));
    assert!(matches!(
        refused(&s, &sign(&rar, &s.key)).await,
        OidcError::UnsupportedClaim("authorization_details")
    ));
    let mtls = claims_with(json!({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}));
    assert!(matches!(
        refused(&s, &sign(&mtls, &s.key)).await,
        OidcError::UnsupportedClaim("cnf")
    ));
}

#[tokio::test]
async fn oversized_and_malformed() {
    let s = setup();
    let big = sign(&claims_with(json!({"pad": "x".repeat(16 * 1024)})), &s.key);
    assert!(matches!(refused(&s, &big).await, OidcError::TooLarge));
    let crit = sign_with_header(
        &json!({"alg": "ES256", "typ": ID_JAG_TYP, "kid": "idp-1", "crit": ["exp"], "exp": 1}),
        &claims(),
        &s.key,
    );
    assert!(matches!(refused(&s, &crit).await, OidcError::UnsupportedCritical));
    for junk in ["", "a.b", "a.b.c.d", "!!.??.**"] {
        assert!(matches!(refused(&s, junk).await, OidcError::Malformed), "{junk}");
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn id_jag_is_off_unless_enabled() {
    let section = |id_jag: Option<bool>, issuer: &str| OidcSection {
        issuer: issuer.into(),
        audience: "aip-authority".into(),
        jwks_file: Some("idp.json".into()),
        jwks_url: None,
        user_claim: None,
        delegatable_tools: None,
        id_jag,
        login: None,
    };
    let from = |s: &OidcSection| OidcProvider::from_section(1, s, Path::new("/srv/aip"));
    assert!(!from(&section(None, IDP)).unwrap().id_jag);
    assert!(!from(&section(Some(false), IDP)).unwrap().id_jag);
    assert!(from(&section(Some(true), IDP)).unwrap().id_jag);
    let error = from(&section(Some(true), "http://idp.example.com")).unwrap_err();
    assert!(error.starts_with("issuer.oidc[1].id_jag: "), "{error}");
}
