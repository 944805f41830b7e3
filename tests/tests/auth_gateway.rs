//! Accounts, sessions, tokens and roles, black-box through the gateway of the test instance
//! (real auth service, real MongoDB). Each test makes its own users.

use auth_claims::{AUDIENCE, AccessClaims, ISSUER, Identity, IdentityKey, Role};
use e2e_tests::{Api, Reply, ServiceProcess, User, closed_port};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::{poll_until, unique};

fn email() -> String {
    format!("{}@example.com", unique("user"))
}

async fn me(api: &Api, token: &str) -> Reply {
    api.get("/users/me", Some(token)).await
}

// --- registration -------------------------------------------------------------------------

#[tokio::test]
async fn registration_creates_an_active_user_with_role_user() {
    let api = Api::gateway();
    let address = email();
    let reply = api.register(&address.to_uppercase(), "long enough").await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body["email"], address, "stored lower-cased");
    assert_eq!(reply.body["roles"], json!(["USER"]));
    assert_eq!(reply.body["status"], "ACTIVE");
    assert!(
        reply.body.get("passwordHash").is_none(),
        "the hash never leaves the service"
    );
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(reply.headers["location"], format!("/users/{id}").as_str());
}

#[tokio::test]
async fn a_registered_email_cannot_register_again_in_any_case() {
    let api = Api::gateway();
    let address = email();
    assert_eq!(api.register(&address, "long enough").await.status, 201);
    let again = api
        .register(&address.to_uppercase(), "another password")
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "email_taken");
}

#[tokio::test]
async fn invalid_fields_are_refused_with_422_naming_each_field() {
    let api = Api::gateway();
    let reply = api
        .post(
            "/auth/register",
            None,
            json!({ "email": "not-an-email", "password": "short", "nickname": " " }),
        )
        .await;
    assert_eq!(reply.status, 422, "{reply:?}");
    assert_eq!(reply.code(), "validation_failed");
    let mut fields: Vec<&str> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["email", "nickname", "password"]);
}

#[tokio::test]
async fn bad_bodies_get_problem_json_with_their_own_codes() {
    let api = Api::gateway();
    let raw = |body: &'static str, content_type: &'static str| {
        api.request(Method::POST, "/auth/register")
            .header("content-type", content_type)
            .body(body)
    };

    let malformed = api.send(raw("{\"email\": ", "application/json")).await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "malformed_json")
    );
    assert_eq!(malformed.content_type(), "application/problem+json");

    let missing = api
        .send(raw(
            r#"{"email":"a@b.io","nickname":"x"}"#,
            "application/json",
        ))
        .await;
    assert_eq!((missing.status, missing.code()), (422, "validation_failed"));
    assert_eq!(missing.body["errors"][0]["field"], "password");

    let not_json = api.send(raw("email=a@b.io", "text/plain")).await;
    assert_eq!(
        (not_json.status, not_json.code()),
        (415, "unsupported_media_type")
    );

    let huge = json!({ "email": email(), "password": "x".repeat(200_000), "nickname": "big" });
    let too_large = api.post("/auth/register", None, huge).await;
    assert_eq!(
        (too_large.status, too_large.code()),
        (413, "payload_too_large")
    );
}

// --- login and sessions ---------------------------------------------------------------------

#[tokio::test]
async fn login_returns_a_bearer_token_pair() {
    let api = Api::gateway();
    let address = email();
    api.register(&address, "long enough").await;
    let reply = api.login(&address, "long enough").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["tokenType"], "Bearer");
    assert_eq!(reply.body["expiresIn"], 900);
    let access = reply.body["accessToken"].as_str().unwrap();
    assert_eq!(me(&api, access).await.body["email"], address);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let api = Api::gateway();
    let user = api.new_user().await;
    let wrong_password = api.login(&user.email, "not the password").await;
    let unknown_email = api.login(&email(), "not the password").await;
    assert_eq!(wrong_password.status, 401);
    assert_eq!(wrong_password.code(), "invalid_credentials");
    assert_eq!(wrong_password.body, unknown_email.body);
    assert_eq!(wrong_password.status, unknown_email.status);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_whole_session() {
    let api = Api::gateway();
    let user = api.new_user().await;
    let refresh = |token: &str| api.post("/auth/refresh", None, json!({ "refreshToken": token }));

    let first = refresh(&user.refresh).await;
    assert_eq!(first.status, 200, "{first:?}");
    let next = first.body["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(next, user.refresh);
    assert_eq!(
        me(&api, first.body["accessToken"].as_str().unwrap())
            .await
            .status,
        200
    );

    // The spent token again: someone replayed it. The whole family goes, the newest too.
    let replay = refresh(&user.refresh).await;
    assert_eq!(
        (replay.status, replay.code()),
        (401, "refresh_token_reused")
    );
    let after = refresh(&next).await;
    assert_eq!((after.status, after.code()), (401, "refresh_token_reused"));

    // Another session of the same user is untouched.
    let other = api.login(&user.email, &user.password).await;
    let other_refresh = other.body["refreshToken"].as_str().unwrap();
    assert_eq!(refresh(other_refresh).await.status, 200);
}

#[tokio::test]
async fn logout_revokes_the_session() {
    let api = Api::gateway();
    let user = api.new_user().await;
    let out = api
        .post(
            "/auth/logout",
            None,
            json!({ "refreshToken": user.refresh }),
        )
        .await;
    assert_eq!(out.status, 204);
    let refresh = api
        .post(
            "/auth/refresh",
            None,
            json!({ "refreshToken": user.refresh }),
        )
        .await;
    assert_eq!(refresh.status, 401);
    let garbage = api
        .post(
            "/auth/refresh",
            None,
            json!({ "refreshToken": "no-such-token" }),
        )
        .await;
    assert_eq!(
        (garbage.status, garbage.code()),
        (401, "invalid_refresh_token")
    );
}

#[tokio::test]
async fn users_read_and_change_their_own_account() {
    let api = Api::gateway();
    let user = api.new_user().await;
    let patch = |body: Value, token: &str| {
        let token = token.to_owned();
        let api = api.clone();
        async move {
            api.call(Method::PATCH, "/users/me", Some(&token), Some(body))
                .await
        }
    };

    let renamed = patch(json!({ "nickname": "  Hero  " }), &user.access).await;
    assert_eq!(
        (renamed.status, renamed.body["nickname"].as_str()),
        (200, Some("Hero"))
    );

    let no_current = patch(json!({ "password": "a new password" }), &user.access).await;
    assert_eq!(no_current.status, 422);
    assert_eq!(no_current.body["errors"][0]["field"], "currentPassword");

    let wrong_current = patch(
        json!({ "password": "a new password", "currentPassword": "wrong!!!" }),
        &user.access,
    )
    .await;
    assert_eq!(
        (wrong_current.status, wrong_current.code()),
        (403, "wrong_password")
    );

    let changed = patch(
        json!({ "password": "a new password", "currentPassword": user.password }),
        &user.access,
    )
    .await;
    assert_eq!(changed.status, 200, "{changed:?}");
    // A new password ends the sessions made with the old one.
    expect_revoked(&api, &user.access).await;
    assert_eq!(api.login(&user.email, &user.password).await.status, 401);
    assert_eq!(api.login(&user.email, "a new password").await.status, 200);
}

#[tokio::test]
async fn users_can_delete_their_own_account() {
    let api = Api::gateway();
    let user = api.new_user().await;
    let deleted = api
        .call(Method::DELETE, "/users/me", Some(&user.access), None)
        .await;
    assert_eq!(deleted.status, 204);
    expect_revoked(&api, &user.access).await;
    let login = api.login(&user.email, &user.password).await;
    assert_eq!((login.status, login.code()), (401, "invalid_credentials"));
}

// --- roles ----------------------------------------------------------------------------------

/// Who may call a representative route of each kind.
#[tokio::test]
async fn each_role_is_allowed_and_refused_by_the_route_table() {
    let api = Api::gateway();
    let users = [
        ("USER", api.user_with_roles(&["USER"]).await),
        ("OPERATOR", api.user_with_roles(&["OPERATOR"]).await),
        ("AUDITOR", api.user_with_roles(&["AUDITOR"]).await),
        ("ADMIN", api.admin().await),
    ];
    let event = json!({
        "name": "Winter login festival",
        "startsAt": "2026-12-01T00:00:00Z",
        "endsAt": "2026-12-31T00:00:00Z",
        "condition": { "metric": "LOGIN_DAYS", "op": ">=", "value": 3 }
    });
    let everyone: &[&str] = &["USER", "OPERATOR", "AUDITOR", "ADMIN"];
    // One route of each kind, who may call it, and what success looks like.
    type Rule<'a> = (Method, &'a str, Option<Value>, &'a [&'a str], u16);
    let rules: [Rule; 6] = [
        (Method::GET, "/users/me", None, everyone, 200),
        (Method::GET, "/events?size=1", None, everyone, 200),
        (Method::GET, "/claims/me", None, everyone, 200),
        (
            Method::POST,
            "/events",
            Some(event),
            &["OPERATOR", "ADMIN"],
            201,
        ),
        (
            Method::GET,
            "/claims?size=1",
            None,
            &["OPERATOR", "AUDITOR", "ADMIN"],
            200,
        ),
        (
            Method::GET,
            "/users?size=1",
            None,
            &["AUDITOR", "ADMIN"],
            200,
        ),
    ];
    for (method, path, body, allowed, success) in rules {
        let anonymous = api.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(
            (anonymous.status, anonymous.code()),
            (401, "missing_token"),
            "{method} {path}"
        );
        for (role, user) in &users {
            let reply = api
                .call(method.clone(), path, Some(&user.access), body.clone())
                .await;
            if allowed.contains(role) {
                assert_eq!(
                    reply.status, success,
                    "{role} on {method} {path}: {reply:?}"
                );
            } else {
                assert_eq!(
                    (reply.status, reply.code()),
                    (403, "forbidden"),
                    "{role} on {method} {path}"
                );
            }
        }
    }
}

#[tokio::test]
async fn administrators_find_read_and_manage_users() {
    let api = Api::gateway();
    let admin = api.admin().await;
    let user = api.new_user().await;

    let found = api
        .get(&format!("/users?email={}", user.email), Some(&admin.access))
        .await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["total"], 1);
    assert_eq!(found.body["items"][0]["id"], user.id.as_str());

    let by_id = api
        .get(&format!("/users/{}", user.id), Some(&admin.access))
        .await;
    assert_eq!(by_id.body["email"], user.email.as_str());
    let missing = api.get("/users/no-such-user", Some(&admin.access)).await;
    assert_eq!((missing.status, missing.code()), (404, "user_not_found"));

    let system = api
        .call(
            Method::PUT,
            &format!("/users/{}/roles", user.id),
            Some(&admin.access),
            Some(json!({ "roles": ["SYSTEM"] })),
        )
        .await;
    assert_eq!(system.status, 422, "SYSTEM is nobody's role");

    let page = api
        .get("/users?status=ACTIVE&page=1&size=2", Some(&admin.access))
        .await;
    assert_eq!(page.body["size"], 2);
    assert!(page.body["items"].as_array().unwrap().len() <= 2);
}

#[tokio::test]
async fn banned_users_lose_their_tokens_and_cannot_sign_in_until_unbanned() {
    let api = Api::gateway();
    let admin = api.admin().await;
    let user = api.new_user().await;
    assert_eq!(me(&api, &user.access).await.status, 200);

    let banned = api
        .call(
            Method::POST,
            &format!("/users/{}/ban", user.id),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(banned.body["status"], "BANNED");
    expect_revoked(&api, &user.access).await;
    let login = api.login(&user.email, &user.password).await;
    assert_eq!((login.status, login.code()), (403, "account_banned"));
    let refresh = api
        .post(
            "/auth/refresh",
            None,
            json!({ "refreshToken": user.refresh }),
        )
        .await;
    assert_eq!(refresh.status, 401);

    api.call(
        Method::POST,
        &format!("/users/{}/unban", user.id),
        Some(&admin.access),
        None,
    )
    .await;
    let again = api.login(&user.email, &user.password).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        me(&api, again.body["accessToken"].as_str().unwrap())
            .await
            .status,
        200
    );
    // The token from before the ban stays dead.
    assert_eq!(me(&api, &user.access).await.status, 401);
}

#[tokio::test]
async fn deleted_users_lose_access_and_their_record_stays() {
    let api = Api::gateway();
    let admin = api.admin().await;
    let user = api.new_user().await;
    let deleted = api
        .call(
            Method::DELETE,
            &format!("/users/{}", user.id),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    expect_revoked(&api, &user.access).await;
    let record = api
        .get(&format!("/users/{}", user.id), Some(&admin.access))
        .await;
    assert_eq!(record.body["status"], "DELETED");
    assert!(record.body["deletedAt"].is_string());
}

#[tokio::test]
async fn demoted_users_lose_what_their_old_role_allowed() {
    let api = Api::gateway();
    let admin = api.admin().await;
    let user = api.user_with_roles(&["ADMIN"]).await;
    assert_eq!(
        api.get("/users?size=1", Some(&user.access)).await.status,
        200
    );

    api.call(
        Method::PUT,
        &format!("/users/{}/roles", user.id),
        Some(&admin.access),
        Some(json!({ "roles": ["USER"] })),
    )
    .await;
    expect_revoked(&api, &user.access).await;
    let fresh = api.login(&user.email, &user.password).await;
    let token = fresh.body["accessToken"].as_str().unwrap();
    assert_eq!(api.get("/users?size=1", Some(token)).await.status, 403);
}

/// The gateway caches a user's status for a couple of seconds; poll until the change shows.
async fn expect_revoked(api: &Api, token: &str) {
    poll_until(
        Duration::from_secs(10),
        "the old access token to stop working",
        || async {
            let reply = me(api, token).await;
            (reply.status == 401).then_some(reply)
        },
    )
    .await;
    let reply = me(api, token).await;
    assert_eq!(reply.code(), "token_revoked");
}

// --- forged, tampered and expired tokens ----------------------------------------------------

fn signing_key() -> EncodingKey {
    EncodingKey::from_ed_pem(test_support::required(test_support::JWT_PRIVATE_KEY_PEM).as_bytes())
        .unwrap()
}

fn claims(user: &User, roles: Vec<Role>, exp_offset: i64) -> AccessClaims {
    let now = auth_claims::unix_now();
    AccessClaims {
        sub: user.id.clone(),
        roles,
        ver: 0,
        iat: now,
        exp: (now as i64 + exp_offset) as u64,
        jti: unique("jti"),
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
    }
}

fn ed_header(kid: &str) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    header
}

#[tokio::test]
async fn only_untampered_unexpired_eddsa_tokens_signed_by_auth_pass() {
    let api = Api::gateway();
    let user = api.new_user().await;
    let sign = |claims: &AccessClaims, header: &Header, key: &EncodingKey| {
        jsonwebtoken::encode(header, claims, key).unwrap()
    };
    let good = sign(
        &claims(&user, vec![Role::User], 600),
        &ed_header("auth-1"),
        &signing_key(),
    );
    assert_eq!(
        me(&api, &good).await.status,
        200,
        "a well-made token passes"
    );

    // Claims changed after signing.
    let (header, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let admin_claims = serde_json::to_vec(&claims(&user, vec![Role::Admin], 600)).unwrap();
    use base64::Engine;
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(admin_claims);
    let tampered = format!("{header}.{forged_payload}.{signature}");

    let expired = sign(
        &claims(&user, vec![Role::User], -3600),
        &ed_header("auth-1"),
        &signing_key(),
    );

    // `alg: none`, unsigned.
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"alg":"none","typ":"JWT","kid":"auth-1"}"#);
    let unsigned = format!("{none_header}.{}.", rest.split_once('.').unwrap().0);

    // HS256 with the *public* key as the HMAC secret: the classic algorithm confusion.
    let jwks = api.get("/.well-known/jwks.json", None).await;
    let public_x = jwks.body["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("auth-1".into());
    let confused = sign(
        &claims(&user, vec![Role::User], 600),
        &hs_header,
        &EncodingKey::from_secret(public_x.as_bytes()),
    );

    // Right kid, wrong key.
    let stranger_key =
        EncodingKey::from_ed_pem(auth_claims::generate_ed25519_pem().as_bytes()).unwrap();
    let stranger = sign(
        &claims(&user, vec![Role::User], 600),
        &ed_header("auth-1"),
        &stranger_key,
    );
    let unknown_kid = sign(
        &claims(&user, vec![Role::User], 600),
        &ed_header("nope"),
        &signing_key(),
    );

    for (name, token, code) in [
        ("tampered", tampered, "invalid_token"),
        ("expired", expired, "token_expired"),
        ("alg none", unsigned, "invalid_token"),
        ("HS256 with the public key", confused, "invalid_token"),
        ("signed by another key", stranger, "invalid_token"),
        ("unknown kid", unknown_kid, "invalid_token"),
        ("not a JWT", "garbage".to_owned(), "invalid_token"),
    ] {
        let reply = me(&api, &token).await;
        assert_eq!((reply.status, reply.code()), (401, code), "{name}");
    }
}

// --- the internal services --------------------------------------------------------------

#[tokio::test]
async fn internal_services_refuse_calls_that_skip_the_gateway() {
    let gateway = Api::gateway();
    let user = gateway.new_user().await;
    let auth = Api::new(test_support::service_url("auth"));

    let bare = auth.get("/users/me", None).await;
    assert_eq!((bare.status, bare.code()), (401, "unauthenticated"));
    let event = Api::new(test_support::service_url("event"));
    let bare = event.get("/claims", Some(&user.access)).await;
    assert_eq!((bare.status, bare.code()), (401, "unauthenticated"));

    // A valid access token is not enough: only the gateway's assertion counts.
    let with_token = auth.get("/users/me", Some(&user.access)).await;
    assert_eq!(with_token.status, 401);

    let forged = IdentityKey::new(&"x".repeat(64).into())
        .unwrap()
        .sign(&Identity {
            sub: user.id.clone(),
            roles: vec![Role::Admin],
        });
    let with_forged = auth
        .send(
            auth.request(Method::GET, "/users")
                .header(auth_claims::IDENTITY_HEADER, forged),
        )
        .await;
    assert_eq!(with_forged.status, 401);

    // With the platform's secret the same call works: the refusals above were for the
    // missing or forged assertion, not something else.
    let key =
        IdentityKey::new(&test_support::required(test_support::IDENTITY_SECRET).into()).unwrap();
    let genuine = key.sign(&Identity {
        sub: user.id.clone(),
        roles: vec![Role::User],
    });
    let with_genuine = auth
        .send(
            auth.request(Method::GET, "/users/me")
                .header(auth_claims::IDENTITY_HEADER, &genuine),
        )
        .await;
    assert_eq!(with_genuine.status, 200);
    // ... and a USER assertion still cannot read the internal session state.
    let session = auth
        .send(
            auth.request(Method::GET, &format!("/internal/users/{}/session", user.id))
                .header(auth_claims::IDENTITY_HEADER, &genuine),
        )
        .await;
    assert_eq!(session.status, 403);

    // Through the gateway, a client's own identity header is dropped, never trusted.
    let system = key.sign(&Identity::system("gateway"));
    let smuggled = gateway
        .send(
            gateway
                .request(Method::GET, "/users/me")
                .header(auth_claims::IDENTITY_HEADER, system),
        )
        .await;
    assert_eq!((smuggled.status, smuggled.code()), (401, "missing_token"));
    let internal = gateway
        .get(&format!("/internal/users/{}/session", user.id), None)
        .await;
    assert_eq!(internal.status, 404, "internal routes are not routed");
}

// --- gateway behaviour ----------------------------------------------------------------------

#[tokio::test]
async fn login_and_register_are_rate_limited_per_client() {
    let gateway = ServiceProcess::start(
        "gateway",
        &[
            ("REWARDS_RATE_LIMIT__PER_MINUTE", "2".into()),
            ("REWARDS_RATE_LIMIT__BURST", "2".into()),
        ],
    );
    let api = Api::new(format!("http://{}", gateway.addr));
    for _ in 0..2 {
        assert_eq!(api.login(&email(), "whatever!").await.status, 401);
    }
    let limited = api.login(&email(), "whatever!").await;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let register = api.register(&email(), "long enough").await;
    assert_eq!(register.status, 429, "the same client, the same budget");
    // Routes without a limit are unaffected.
    assert_eq!(api.get("/.well-known/jwks.json", None).await.status, 200);
}

#[tokio::test]
async fn a_down_upstream_is_502_and_a_silent_one_504() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let gateway = ServiceProcess::start(
        "gateway",
        &[
            ("REWARDS_UPSTREAMS__AUTH", format!("http://{silent_addr}")),
            ("REWARDS_UPSTREAMS__TIMEOUT_MS", "300".into()),
        ],
    );
    let api = Api::new(format!("http://{}", gateway.addr));
    let slow = api.login(&email(), "whatever!").await;
    assert_eq!((slow.status, slow.code()), (504, "upstream_timeout"));
    assert_eq!(slow.content_type(), "application/problem+json");

    let down = ServiceProcess::start(
        "gateway",
        &[(
            "REWARDS_UPSTREAMS__AUTH",
            format!("http://127.0.0.1:{}", closed_port()),
        )],
    );
    let api = Api::new(format!("http://{}", down.addr));
    let refused = api.login(&email(), "whatever!").await;
    assert_eq!(
        (refused.status, refused.code()),
        (502, "upstream_unavailable")
    );
}

#[tokio::test]
async fn request_ids_and_trace_context_reach_the_service() {
    let api = Api::gateway();
    let request_id = unique("req");
    let trace_id = uuid_hex();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let reply = api
        .send(
            api.request(Method::GET, "/.well-known/jwks.json")
                .header("x-request-id", &request_id)
                .header("traceparent", &traceparent),
        )
        .await;
    assert_eq!(reply.headers["x-request-id"], request_id.as_str());
    // auth logged the request with both: the client's trace, one hop further.
    let log = std::path::Path::new(&test_support::required(test_support::CONFIG_DIR))
        .join("../logs/auth.log");
    poll_until(
        Duration::from_secs(5),
        "auth to log the request",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .any(|l| {
                    l.contains(&request_id)
                        && l.contains(&format!(r#""trace_id":"{trace_id}""#))
                        && !l.contains(&traceparent)
                })
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_gateway_serves_its_openapi_document_and_metrics() {
    let api = Api::gateway();
    let doc = api.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc.body["paths"]["/auth/login"]["post"].is_object());

    let user = api.new_user().await;
    me(&api, &user.access).await;
    let metrics = api.send(api.request(Method::GET, "/metrics")).await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("http_requests_total{") && l.contains(r#"route="/users/me""#)),
        "{text}"
    );
}

/// List routes take their filters and page from the query string, as the document says,
/// and refuse a malformed or out-of-range value instead of replacing it with a default.
#[tokio::test]
async fn query_strings_are_read_strictly_as_documented() {
    let api = Api::gateway();
    let doc = api.get("/openapi.json", None).await;
    let params = &doc.body["paths"]["/claims/me"]["get"]["parameters"];
    for param in params.as_array().unwrap() {
        assert_eq!(param["in"], "query", "{param}");
        assert_eq!(param["required"], false, "{param}");
    }
    let user = api.new_user().await;
    let ok = api
        .get(
            "/claims/me?page=1&size=100&status=PENDING",
            Some(&user.access),
        )
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body["size"], 100);
    for bad in [
        "size=abc",
        "page=null",
        "page=0",
        "size=101",
        "page=10001",
        "status=LOST",
        "from=yesterday",
        "to=2026-13-01T00:00:00Z",
    ] {
        let reply = api
            .get(&format!("/claims/me?{bad}"), Some(&user.access))
            .await;
        assert_eq!(reply.status, 400, "{bad}: {reply:?}");
        assert_eq!(reply.body["code"], "invalid_query", "{bad}");
        assert_eq!(
            reply.headers["content-type"], "application/problem+json",
            "{bad}"
        );
    }
}

/// A method a path does not take is a 405 that says which ones it does.
#[tokio::test]
async fn a_method_a_path_does_not_take_is_405_with_allow() {
    let api = Api::gateway();
    let reply = api.send(api.request(Method::PUT, "/events/some-id")).await;
    assert_eq!(reply.status, 405, "{reply:?}");
    assert_eq!(reply.body["code"], "method_not_allowed");
    assert_eq!(reply.headers["allow"], "GET, PATCH");
}

/// Bodies are JSON objects: an array is refused even where every field is optional (serde
/// alone would read it as an empty object), and so is a nested filter given as an array.
#[tokio::test]
async fn bodies_and_nested_objects_must_be_json_objects() {
    let api = Api::gateway();
    let user = api.new_user().await;
    let reply = api
        .call(
            Method::PATCH,
            "/users/me",
            Some(&user.access),
            Some(json!([])),
        )
        .await;
    assert_eq!(reply.status, 422, "{reply:?}");
    assert_eq!(reply.body["errors"][0]["field"], "body");
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let event = json!({
        "name": "shapes",
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-02-01T00:00:00Z",
        "condition": { "metric": "ITEM_USED", "op": ">=", "value": 1, "filter": [] },
    });
    let reply = api
        .call(Method::POST, "/events", Some(&operator.access), Some(event))
        .await;
    assert_eq!(reply.status, 422, "{reply:?}");
}

/// 32 hex digits, unique to this call.
fn uuid_hex() -> String {
    let name = unique("trace");
    let hex = name.rsplit('_').next().unwrap();
    format!("{hex:0>32}")
}

/// The gateway reads a body whole before it forwards it (so that it can send it to another
/// instance); a client that never finishes sending one is answered 408 within the upstream
/// timeout instead of holding the connection.
#[tokio::test]
async fn a_request_body_that_does_not_arrive_in_time_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = ServiceProcess::start(
        "gateway",
        &[("REWARDS_UPSTREAMS__TIMEOUT_MS", "500".into())],
    )
    .ready()
    .await;
    let mut stream = tokio::net::TcpStream::connect(&gateway.addr).await.unwrap();
    stream
        .write_all(
            b"POST /auth/refresh HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"refreshToken\":",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer before the client gives up")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..read]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert!(head.contains("body_timeout"), "{head}");
}
