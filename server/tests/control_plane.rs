//! The control plane through the real binary: spaces, tokens, clear errors.

mod support;

use support::*;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn spaces_move_through_their_lifecycle_with_clear_errors() {
    let s = Server::start(&[]);
    let admin = s.token("admin", None, "1h");
    let auth = bearer(&admin);

    // no token, forged token, expired token, listener token
    let r = request(s.addr, "POST", "/api/spaces", &[], Some(r#"{"title":"x"}"#));
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("missing credentials"),
        "{}",
        r.text()
    );
    // a well-formed admin token signed with some other secret
    let claims = tribune_core::token::Claims::new(
        "mallory",
        tribune_core::token::Role::Admin,
        None,
        1_700_000_000,
        1_000_000_000,
    );
    // HS256 with a secret that is not the node's, as tokens of earlier
    // versions were signed
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not the node's secret, not at all"),
    )
    .unwrap();
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &bearer(&forged))],
        Some(r#"{"title":"x"}"#),
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("signature"), "{}", r.text());
    let short = s.token("admin", None, "1s");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &bearer(&short))],
        Some(r#"{"title":"x"}"#),
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("expired"), "{}", r.text());
    let listener = s.token("listener", None, "1h");
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &bearer(&listener))],
        Some(r#"{"title":"x"}"#),
    );
    assert_eq!(r.status, 403, "{}", r.text());

    // invalid bodies
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &auth)],
        Some("{not json"),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("invalid JSON"),
        "{}",
        r.text()
    );
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &auth)],
        Some(r#"{"title":"  "}"#),
    );
    assert_eq!(r.status, 400);
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &auth)],
        Some(r#"{"titel":"typo"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        Some(r#"{"title":"x"}"#),
    );
    assert_eq!(r.status, 415, "{}", r.text());

    // create, read, list
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &auth)],
        Some(r#"{"title":"Town hall","scheduled_at":1900000000000}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["state"], "scheduled");
    assert_eq!(v["scheduled_at"], 1_900_000_000_000u64);
    let host = v["host_token"].as_str().unwrap().to_string();
    let r = request(s.addr, "GET", &format!("/api/spaces/{id}"), &[], None);
    assert_eq!(r.json()["title"], "Town hall");
    assert!(r.json()["urls"]["live"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/spaces/{id}/live.opus")));
    let r = request(s.addr, "GET", "/api/spaces", &[], None);
    assert_eq!(r.json()["spaces"].as_array().unwrap().len(), 1);
    let r = request(s.addr, "GET", "/api/spaces/nope", &[], None);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("no space"));

    // a speaker token cannot start the space; a host token for another space cannot either
    let speaker = s.token("speaker", Some(&id), "1h");
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/start"),
        &[("Authorization", &bearer(&speaker))],
        None,
    );
    assert_eq!(r.status, 403);
    let other_host = s.token("host", Some("another-space"), "1h");
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/start"),
        &[("Authorization", &bearer(&other_host))],
        None,
    );
    assert_eq!(r.status, 403);

    // lifecycle: scheduled -> live -> ended, and ended is final
    let start = format!("/api/spaces/{id}/start");
    let end = format!("/api/spaces/{id}/end");
    let r = request(
        s.addr,
        "POST",
        &start,
        &[("Authorization", &bearer(&host))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "live");
    let r = request(
        s.addr,
        "POST",
        &start,
        &[("Authorization", &bearer(&host))],
        None,
    );
    assert_eq!(r.status, 409);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("cannot start a space that is live"));
    let r = request(
        s.addr,
        "POST",
        &end,
        &[("Authorization", &bearer(&host))],
        None,
    );
    assert_eq!(r.json()["state"], "ended");
    let r = request(
        s.addr,
        "POST",
        &end,
        &[("Authorization", &bearer(&host))],
        None,
    );
    assert_eq!(r.status, 409);
    let r = request(
        s.addr,
        "POST",
        &start,
        &[("Authorization", &bearer(&host))],
        None,
    );
    assert_eq!(r.status, 409);
}

#[test]
fn hosts_mint_speaker_and_listener_tokens_for_their_space() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Minting");
    let path = format!("/api/spaces/{id}/tokens");
    let r = request(
        s.addr,
        "POST",
        &path,
        &[("Authorization", &bearer(&host))],
        Some(r#"{"role":"speaker","identity":"guest","ttl":"30m"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let speaker = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(r.json()["space"], id.as_str());
    // the minted token publishes to this space (checked by the source endpoint's auth)
    let r = request(
        s.addr,
        "POST",
        &path,
        &[("Authorization", &bearer(&speaker))],
        Some(r#"{"role":"listener"}"#),
    );
    assert_eq!(r.status, 403, "a speaker may not mint");
    let r = request(
        s.addr,
        "POST",
        &path,
        &[("Authorization", &bearer(&host))],
        Some(r#"{"role":"admin"}"#),
    );
    assert_eq!(r.status, 403, "a host may not mint admin tokens");
    let r = request(
        s.addr,
        "POST",
        &path,
        &[("Authorization", &bearer(&host))],
        Some(r#"{"role":"wizard"}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unknown role"));
    let r = request(
        s.addr,
        "POST",
        &path,
        &[("Authorization", &bearer(&host))],
        Some(r#"{"role":"listener","ttl":"forever"}"#),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn the_cli_refuses_bad_arguments_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tribune"))
        .args(["token", "--data"])
        .arg(dir.path())
        .args(["--role", "admin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run `tribune serve"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Server::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tribune"))
        .args(["token", "--data"])
        .arg(&s.data)
        .args(["--role", "king"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tribune"))
        .args(["serve", "--data"])
        .arg(&s.data)
        .args(["--flush-ms", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("flush_ms must be greater than 0"));
}

#[test]
fn the_host_is_shown_by_the_name_they_give() {
    let s = Server::start(&[]);
    let admin = s.token("admin", None, "1h");
    let create = |body: &str| {
        request(
            s.addr,
            "POST",
            "/api/spaces",
            &[("Authorization", &bearer(&admin))],
            Some(body),
        )
    };
    let r = create(r#"{"title":"Named","host_name":"  Ada Lovelace "}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(s.info(&id)["host_name"], "Ada Lovelace");
    assert_eq!(s.info(&id)["created_by"], "admin");
    let r = create(r#"{"title":"Unnamed"}"#);
    let unnamed = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(s.info(&unnamed)["host_name"], serde_json::Value::Null);
    for bad in [r#""""#, r#""\u0007""#, &format!("\"{}\"", "x".repeat(61))] {
        let r = create(&format!(r#"{{"title":"Bad","host_name":{bad}}}"#));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
}
