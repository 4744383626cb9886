//! SCIM 2.0 provisioning of users over HTTP, as Okta and Entra ID drive it: create, read,
//! replace, patch (their forms), deactivate and reactivate, delete and re-create, filters,
//! pages, ETags; only a provisioning account's key gets in, and it gets nothing else; the last
//! Team Admin stays; bad input is a SCIM error that writes nothing.

use fluxgate_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Backend, TestServer, authed, expect_code};

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One SCIM request on a fresh HTTP/1.1 connection.
async fn scim(
    s: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} /scim/v2{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n",
        s.addr,
        body.len()
    );
    if let Some(k) = key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut st = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    st.write_all(head.as_bytes()).await.unwrap();
    st.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    st.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut payload = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked")
    {
        payload = dechunk(&payload);
    }
    let body = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload).unwrap_or(Value::Null)
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
    out
}

/// A provisioning service account's key, and the account's name.
async fn provisioning_key(s: &TestServer, admin: &str, provisioner: bool) -> (String, String) {
    crate::harness::service_account_key(s.channel.clone(), admin, provisioner).await
}

fn error_of(r: &Reply) -> (&str, &str) {
    assert_eq!(
        r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
        "{}",
        r.body
    );
    assert_eq!(r.body["status"], r.status.to_string());
    (
        r.body["scimType"].as_str().unwrap_or(""),
        r.body["detail"].as_str().unwrap_or(""),
    )
}

async fn okta_provisions_users(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let (key, sa) = provisioning_key(&s, &admin, true).await;
    let k = Some(key.as_str());

    // Okta looks the user up first, then creates them.
    let r = scim(
        &s,
        "GET",
        "/Users?filter=userName%20eq%20%22ada%40example.com%22&startIndex=1&count=100",
        k,
        None,
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["totalResults"].as_i64()),
        (200, Some(0)),
        "{}",
        r.body
    );
    let ada = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ada@example.com",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"primary": true, "value": "ada@example.com", "type": "work"}],
        "displayName": "Ada Lovelace",
        "locale": "en-GB",
        "externalId": "00u1okta",
        "active": true,
        "password": "never-stored-Passw0rd",
    });
    let r = scim(&s, "POST", "/Users", k, Some(ada.clone()), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(
        r.header("location")
            .unwrap()
            .ends_with(&format!("/scim/v2/Users/{id}"))
    );
    assert_eq!(r.header("etag"), r.body["meta"]["version"].as_str());
    assert_eq!(r.body["userName"], "ada@example.com");
    assert_eq!(r.body["name"]["familyName"], "Lovelace");
    assert_eq!(r.body["locale"], "en-GB");
    assert!(r.body.get("password").is_none());
    // In FluxGate: a user like any other, seen by the engine at once.
    let u = user_of(&s, &admin, &id).await;
    assert_eq!(
        (
            u.username.as_str(),
            u.email.as_str(),
            u.display_name.as_str()
        ),
        ("ada", "ada@example.com", "Ada Lovelace")
    );
    assert!(u.active);

    // The same userName again: uniqueness, nothing written.
    let before = s.audit_count();
    let r = scim(&s, "POST", "/Users", k, Some(ada.clone()), &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(error_of(&r).0, "uniqueness");
    assert_eq!(s.audit_count(), before);

    // Read back, filtered and paged.
    let r = scim(&s, "GET", &format!("/Users/{id}"), k, None, &[]).await;
    assert_eq!(
        (r.status, r.body["externalId"].as_str()),
        (200, Some("00u1okta"))
    );
    let etag = r.header("etag").unwrap().to_owned();
    for (filter, hits) in [
        ("userName eq \"ADA@example.com\"", 1),
        ("externalId eq \"00u1okta\"", 1),
        ("emails co \"@example.com\" and active eq true", 1),
        ("displayName sw \"Ada\" or userName eq \"nobody\"", 1),
        ("emails[type eq \"work\" and value co \"ada\"]", 1),
        ("externalId pr", 1),
        ("not (userName eq \"ada@example.com\") and externalId pr", 0),
        ("userName ne \"ada@example.com\" and externalId pr", 0),
    ] {
        let q: String = openidconnect_encode(filter);
        let r = scim(&s, "GET", &format!("/Users?filter={q}"), k, None, &[]).await;
        assert_eq!(
            (r.status, r.body["totalResults"].as_i64()),
            (200, Some(hits)),
            "{filter}: {}",
            r.body
        );
    }
    let r = scim(&s, "GET", "/Users?filter=userName%20eq", k, None, &[]).await;
    assert_eq!((r.status, error_of(&r).0), (400, "invalidFilter"));
    let r = scim(
        &s,
        "GET",
        "/Users?filter=userName%20gt%20%22a%22",
        k,
        None,
        &[],
    )
    .await;
    assert_eq!((r.status, error_of(&r).0), (400, "invalidFilter"));
    for n in ["bob", "cy", "di"] {
        let r = scim(
            &s,
            "POST",
            "/Users",
            k,
            Some(json!({"userName": n, "emails": [{"value": format!("{n}@example.com")}]})),
            &[],
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = scim(
        &s,
        "GET",
        "/Users?startIndex=2&count=2&attributes=userName",
        k,
        None,
        &[],
    )
    .await;
    assert_eq!(
        (
            r.body["startIndex"].as_i64(),
            r.body["itemsPerPage"].as_i64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(
        r.body["totalResults"].as_i64(),
        Some(5),
        "admin, ada and three more"
    );
    let first = &r.body["Resources"][0];
    assert!(
        first.get("userName").is_some()
            && first.get("id").is_some()
            && first.get("emails").is_none()
    );

    // Replace (PUT), then a stale If-Match is refused.
    let mut changed = ada.clone();
    changed["displayName"] = json!("Ada King");
    let r = scim(
        &s,
        "PUT",
        &format!("/Users/{id}"),
        k,
        Some(changed.clone()),
        &[("If-Match", &etag)],
    )
    .await;
    assert_eq!(
        (r.status, r.body["displayName"].as_str()),
        (200, Some("Ada King")),
        "{}",
        r.body
    );
    let r = scim(
        &s,
        "PUT",
        &format!("/Users/{id}"),
        k,
        Some(changed),
        &[("If-Match", &etag)],
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.body);
    let stale = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "displayName", "value": "Late"}]});
    let r = scim(
        &s,
        "PATCH",
        &format!("/Users/{id}"),
        k,
        Some(stale),
        &[("If-Match", &etag)],
    )
    .await;
    assert_eq!(r.status, 412, "a PATCH with a stale If-Match: {}", r.body);

    // Her session ends when Okta deactivates her; reactivation lets her back.
    let temp = s
        .password_reset()
        .reset_user_password(authed(
            pb::ResetUserPasswordRequest {
                name: format!("users/{id}"),
                etag: user_of(&s, &admin, &id).await.etag,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .temporary_password;
    let session = s.login("ada", &temp).await.tokens.unwrap().access_token;
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let r = scim(&s, "PATCH", &format!("/Users/{id}"), k, Some(off), &[]).await;
    assert_eq!(
        (r.status, r.body["active"].as_bool()),
        (200, Some(false)),
        "{}",
        r.body
    );
    expect_code(
        s.auth()
            .who_am_i(authed(pb::WhoAmIRequest {}, &session))
            .await,
        Code::Unauthenticated,
    );
    let on = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "active", "value": true}]});
    let r = scim(&s, "PATCH", &format!("/Users/{id}"), k, Some(on), &[]).await;
    assert_eq!((r.status, r.body["active"].as_bool()), (200, Some(true)));

    // The role, through FluxGate's extension.
    let role = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:fluxgate:2.0:User:role", "value": "approver"}]});
    let r = scim(&s, "PATCH", &format!("/Users/{id}"), k, Some(role), &[]).await;
    assert_eq!(
        r.body["urn:ietf:params:scim:schemas:extension:fluxgate:2.0:User"]["role"], "approver",
        "{}",
        r.body
    );

    // DELETE deactivates and hides; the same userName brings her back.
    let r = scim(&s, "DELETE", &format!("/Users/{id}"), k, None, &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        scim(&s, "GET", &format!("/Users/{id}"), k, None, &[])
            .await
            .status,
        404
    );
    let u = user_of(&s, &admin, &id).await;
    assert!(!u.active, "deleted through SCIM: deactivated, kept");
    let r = scim(&s, "POST", "/Users", k, Some(ada), &[]).await;
    assert_eq!(
        (r.status, r.body["id"].as_str()),
        (201, Some(id.as_str())),
        "{}",
        r.body
    );
    assert_eq!(r.body["active"], true);

    // The last active Team Admin stays, whatever the provider says.
    let admin_id = s
        .auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .name;
    let admin_id = admin_id.trim_start_matches("users/");
    let before = s.audit_count();
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let r = scim(
        &s,
        "PATCH",
        &format!("/Users/{admin_id}"),
        k,
        Some(off),
        &[],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(error_of(&r).1.contains("last active Team Admin"));
    assert_eq!(
        scim(&s, "DELETE", &format!("/Users/{admin_id}"), k, None, &[])
            .await
            .status,
        409
    );
    assert_eq!(s.audit_count(), before);

    // Audited, by the provisioning account.
    let events = s.audit_events();
    let by_sa = |action: &str, words: &str| {
        events
            .iter()
            .filter(|e| {
                e.action == action
                    && e.actor_id.as_deref() == Some(sa.as_str())
                    && e.detail.as_deref().unwrap_or("").contains(words)
            })
            .count()
    };
    assert_eq!(by_sa("user.created", "provisioned through SCIM"), 4);
    assert!(by_sa("user.deactivated", "through SCIM") >= 2);
    assert!(by_sa("user.reactivated", "through SCIM") >= 2);
    assert_eq!(
        by_sa("user.updated", "role requester -> approver through SCIM"),
        1
    );
    s.stop().await;
}

/// A filter, percent-encoded for a query string.
fn openidconnect_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn entra_provisions_users(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let (key, _) = provisioning_key(&s, &admin, true).await;
    let k = Some(key.as_str());
    // Entra ID probes with a random filter first, then creates.
    let r = scim(
        &s,
        "GET",
        "/Users?filter=userName%20eq%20%22non-existent-7f3%22",
        k,
        None,
        &[],
    )
    .await;
    assert_eq!(r.body["totalResults"], 0);
    let r = scim(&s, "POST", "/Users", k, Some(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "grace",
        "userName": "Grace.Hopper@contoso.example",
        "active": true,
        "displayName": "Grace Hopper",
        "emails": [{"primary": true, "type": "work", "value": "grace@contoso.example"}],
        "name": {"formatted": "Grace Hopper", "familyName": "Hopper", "givenName": "Grace"},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Navy"},
    })), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let patch = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    // Entra's updates: capitalised ops, value paths, string booleans.
    let r = scim(&s, "PATCH", &format!("/Users/{id}"), k, Some(patch(json!([
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "grace.hopper@contoso.example"},
        {"op": "Replace", "path": "displayName", "value": "Rear Admiral Hopper"},
        {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Computing"},
        {"op": "Replace", "path": "name.givenName", "value": "Amazing Grace"},
    ]))), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["emails"][0]["value"], "grace.hopper@contoso.example");
    assert_eq!(
        r.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "Computing"
    );
    assert_eq!(r.body["name"]["givenName"], "Amazing Grace");
    let u = user_of(&s, &admin, &id).await;
    assert_eq!(
        (u.email.as_str(), u.display_name.as_str()),
        ("grace.hopper@contoso.example", "Rear Admiral Hopper")
    );
    let r = scim(
        &s,
        "PATCH",
        &format!("/Users/{id}"),
        k,
        Some(patch(
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )),
        &[],
    )
    .await;
    assert_eq!(r.body["active"], false, "{}", r.body);
    let r = scim(
        &s,
        "PATCH",
        &format!("/Users/{id}"),
        k,
        Some(patch(
            json!([{"op": "Replace", "path": "active", "value": "True"}]),
        )),
        &[],
    )
    .await;
    assert_eq!(r.body["active"], true);
    let r = scim(
        &s,
        "GET",
        "/Users?filter=externalId%20eq%20%22grace%22",
        k,
        None,
        &[],
    )
    .await;
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());
    s.stop().await;
}

async fn only_provisioning_keys_get_in_and_bad_input_writes_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let (key, sa_name) = provisioning_key(&s, &admin, true).await;
    let (other, _) = provisioning_key(&s, &admin, false).await;
    let k = Some(key.as_str());
    // No key, a session token, a key of an ordinary account.
    let r = scim(&s, "GET", "/Users", None, None, &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    error_of(&r);
    assert_eq!(
        scim(&s, "GET", "/Users", Some(&admin), None, &[])
            .await
            .status,
        401
    );
    let r = scim(&s, "GET", "/Users", Some(&other), None, &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Keys rotate like any other: the old one stops at once, the new one works.
    let keys = s
        .service_accounts()
        .list_service_account_keys(authed(
            pb::ListServiceAccountKeysRequest {
                parent: sa_name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let rotated = s
        .service_accounts()
        .rotate_service_account_key(authed(
            pb::RotateServiceAccountKeyRequest {
                name: keys[0].name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_eq!(scim(&s, "GET", "/Users", k, None, &[]).await.status, 401);
    let r = scim(&s, "GET", "/Users", Some(&rotated), None, &[]).await;
    assert_eq!(r.status, 200, "the rotated key");
    let key = rotated;
    let k = Some(key.as_str());
    // The provisioning key is good for nothing else.
    expect_code(
        s.users()
            .list_users(authed(pb::ListUsersRequest::default(), &key))
            .await,
        Code::PermissionDenied,
    );
    // A provisioning account is the organisation's, and only that.
    let e = s
        .service_accounts()
        .create_service_account(authed(
            pb::CreateServiceAccountRequest {
                service_account: Some(pb::ServiceAccount {
                    display_name: "Bad".into(),
                    provisioner: true,
                    audit_writer: true,
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await;
    expect_code(e, Code::InvalidArgument);

    // Discovery.
    let r = scim(&s, "GET", "/ServiceProviderConfig", k, None, &[]).await;
    assert_eq!(
        (
            r.body["patch"]["supported"].as_bool(),
            r.body["etag"]["supported"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let r = scim(&s, "GET", "/ResourceTypes", k, None, &[]).await;
    assert_eq!(r.body["Resources"][0]["endpoint"], "/Users");
    assert_eq!(r.body["Resources"][1]["endpoint"], "/Groups");
    let r = scim(
        &s,
        "GET",
        "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
        k,
        None,
        &[],
    )
    .await;
    assert_eq!(r.body["attributes"][0]["name"], "userName");
    assert_eq!(
        scim(&s, "GET", "/Schemas/urn:nope", k, None, &[])
            .await
            .status,
        404
    );
    assert_eq!(scim(&s, "GET", "/Nothing", k, None, &[]).await.status, 404);

    // Bad input: a SCIM error, nothing written.
    let before = s.audit_count();
    for (method, path, body, kind) in [
        (
            "POST",
            "/Users",
            json!({"emails": [{"value": "x@example.com"}]}),
            "invalidValue",
        ),
        (
            "POST",
            "/Users",
            json!({"userName": "x", "emails": [{"value": "not an address"}]}),
            "invalidValue",
        ),
        (
            "POST",
            "/Users",
            json!({"userName": "x", "active": "perhaps"}),
            "invalidValue",
        ),
        ("POST", "/Users", json!({"userName": 7}), "invalidValue"),
        (
            "POST",
            "/Users",
            json!({"userName": "x", "urn:ietf:params:scim:schemas:extension:fluxgate:2.0:User": {"role": "emperor"}}),
            "invalidValue",
        ),
        (
            "POST",
            "/Users",
            json!(["not", "an", "object"]),
            "invalidSyntax",
        ),
    ] {
        let r = scim(&s, method, path, k, Some(body.clone()), &[]).await;
        assert_eq!(
            (r.status, error_of(&r).0),
            (400, kind),
            "{body}: {}",
            r.body
        );
    }
    let r = scim(
        &s,
        "POST",
        "/Users",
        k,
        Some(json!({"userName": "ok", "emails": [{"value": "admin@fluxgate.local"}]})),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, error_of(&r).0),
        (409, "uniqueness"),
        "an email in use"
    );
    let admin_id = s
        .auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .name;
    let path = format!("/Users/{}", admin_id.trim_start_matches("users/"));
    for (body, kind) in [
        (
            json!({"Operations": [{"op": "replace", "path": "displayName", "value": "X"}]}),
            "invalidSyntax",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "id", "value": "x"}]}),
            "mutability",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "remove", "path": "userName"}]}),
            "invalidValue",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "emails[type eq", "value": "x"}]}),
            "invalidSyntax",
        ),
    ] {
        let r = scim(&s, "PATCH", &path, k, Some(body.clone()), &[]).await;
        assert_eq!(
            (r.status, error_of(&r).0),
            (400, kind),
            "{body}: {}",
            r.body
        );
    }
    let r = scim(
        &s,
        "PUT",
        &path,
        k,
        Some(json!({"id": "someone-else", "userName": "admin"})),
        &[],
    )
    .await;
    assert_eq!((r.status, error_of(&r).0), (400, "mutability"));
    assert_eq!(
        scim(&s, "GET", "/Users/not-an-id", k, None, &[])
            .await
            .status,
        404
    );
    assert_eq!(
        scim(&s, "GET", "/Users?count=abc", k, None, &[])
            .await
            .status,
        400
    );
    assert_eq!(s.audit_count(), before, "nothing written");
    s.stop().await;
}

async fn create(s: &TestServer, k: Option<&str>, user_name: &str) -> String {
    let r = scim(s, "POST", "/Users", k, Some(json!({"userName": user_name, "emails": [{"value": format!("{user_name}@example.com")}]})), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// The user behind SCIM id `id`, as FluxGate's own API shows it.
async fn user_of(s: &TestServer, admin: &str, id: &str) -> pb::User {
    s.users()
        .get_user(authed(
            pb::GetUserRequest {
                name: format!("users/{id}"),
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

fn member_ids(body: &Value) -> Vec<String> {
    let mut v: Vec<String> = body["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["value"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn groups_are_pushed_to_portfolio_groups(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let (key, sa) = provisioning_key(&s, &admin, true).await;
    let k = Some(key.as_str());
    let payments = s.portfolio(&admin, "Payments").await;
    s.portfolio(&admin, "Search").await;
    let (ada, bob) = (create(&s, k, "ada").await, create(&s, k, "bob").await);

    // Okta pushes a group: a new portfolio group, with its members, seen by FluxGate at once.
    let r = scim(&s, "POST", "/Groups", k, Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Payments/Release Managers", "externalId": "00g1", "members": [{"value": ada}]})), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(member_ids(&r.body), vec![ada.clone()]);
    let group_name = format!("{}/groups/{gid}", payments.name);
    let members = |s: &TestServer| {
        let (admin, group_name) = (admin.clone(), group_name.clone());
        let mut c = s.groups();
        async move {
            let mut m = c
                .list_group_members(authed(
                    pb::ListGroupMembersRequest {
                        group: group_name,
                        ..Default::default()
                    },
                    &admin,
                ))
                .await
                .unwrap()
                .into_inner()
                .members;
            m.sort();
            m
        }
    };
    assert_eq!(members(&s).await, vec![format!("users/{ada}")]);
    // A service account FluxGate put in the group is FluxGate's business: SCIM leaves it be.
    let deployer = s.service_account(&admin, "Deployer").await;
    s.add_member(&admin, &group_name, &deployer.name).await;

    // Bad names, the same group twice.
    let before = s.audit_count();
    for (name, code, kind) in [
        ("Nowhere/X", 400, "invalidValue"),
        ("no slash", 400, "invalidValue"),
        ("Payments/Release Managers", 409, "uniqueness"),
    ] {
        let r = scim(
            &s,
            "POST",
            "/Groups",
            k,
            Some(json!({"displayName": name})),
            &[],
        )
        .await;
        assert_eq!(
            (r.status, error_of(&r).0),
            (code, kind),
            "{name}: {}",
            r.body
        );
    }
    let r = scim(
        &s,
        "POST",
        "/Groups",
        k,
        Some(json!({"displayName": "Payments/Y", "members": [{"value": "not-a-user"}]})),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(s.audit_count(), before, "nothing written");

    // Okta's member add and value-filter removal; Entra's add and remove by value list.
    let path = format!("/Groups/{gid}");
    let r = scim(
        &s,
        "PATCH",
        &path,
        k,
        Some(patch(
            json!([{"op": "add", "path": "members", "value": [{"value": bob}]}]),
        )),
        &[],
    )
    .await;
    assert_eq!(
        member_ids(&r.body),
        {
            let mut v = vec![ada.clone(), bob.clone()];
            v.sort();
            v
        },
        "{}",
        r.body
    );
    let r = scim(
        &s,
        "PATCH",
        &path,
        k,
        Some(patch(
            json!([{"op": "remove", "path": format!("members[value eq \"{ada}\"]")}]),
        )),
        &[],
    )
    .await;
    assert_eq!(member_ids(&r.body), vec![bob.clone()], "{}", r.body);
    let r = scim(
        &s,
        "PATCH",
        &path,
        k,
        Some(patch(
            json!([{"op": "Remove", "path": "members", "value": [{"value": bob}]}]),
        )),
        &[],
    )
    .await;
    assert!(member_ids(&r.body).is_empty(), "{}", r.body);
    let r = scim(&s, "PATCH", &path, k, Some(patch(json!([{"op": "Add", "path": "members", "value": [{"value": ada}, {"value": bob}]}, {"op": "Replace", "path": "displayName", "value": "Payments/Releasers"}]))), &[]).await;
    assert_eq!(
        (r.status, r.body["displayName"].as_str()),
        (200, Some("Payments/Releasers")),
        "{}",
        r.body
    );
    assert_eq!(members(&s).await.len(), 3, "ada, bob and the deployer");
    // Okta's PUT replaces the members it knows; the deployer stays.
    let r = scim(
        &s,
        "PUT",
        &path,
        k,
        Some(json!({"displayName": "Payments/Releasers", "externalId": "00g1", "members": [{"value": ada}]})),
        &[],
    )
    .await;
    assert_eq!(member_ids(&r.body), vec![ada.clone()]);
    let mut want = vec![format!("users/{ada}"), deployer.name.clone()];
    want.sort();
    assert_eq!(members(&s).await, want);
    let r = scim(
        &s,
        "PUT",
        &path,
        k,
        Some(json!({"displayName": "Search/Releasers"})),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, error_of(&r).0),
        (400, "invalidValue"),
        "no moving between portfolios"
    );

    // Found by filter.
    for (f, n) in [
        ("displayName eq \"payments/releasers\"", 1),
        (&*format!("members[value eq \"{ada}\"]"), 1),
        ("externalId eq \"00g1\"", 1),
        ("displayName sw \"Search/\"", 1),
    ] {
        let r = scim(
            &s,
            "GET",
            &format!("/Groups?filter={}", openidconnect_encode(f)),
            k,
            None,
            &[],
        )
        .await;
        assert_eq!(r.body["totalResults"].as_i64(), Some(n), "{f}: {}", r.body);
    }

    // A portfolio's Administrators group: members yes, renamed or deleted never.
    let admins = scim(
        &s,
        "GET",
        "/Groups?filter=displayName%20eq%20%22Payments%2FAdministrators%22",
        k,
        None,
        &[],
    )
    .await;
    let admins_id = admins.body["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = s.application(&admin, &payments.name, "Checkout").await;
    let env = s.environment(&admin, &app.name, "prod").await;
    let bob_name = format!("users/{bob}");
    assert!(
        !s.check(&admin, &bob_name, pb::Permission::ChangeValue, &env.name)
            .await
            .allowed
    );
    let r = scim(
        &s,
        "PATCH",
        &format!("/Groups/{admins_id}"),
        k,
        Some(patch(
            json!([{"op": "add", "path": "members", "value": [{"value": bob}]}]),
        )),
        &[],
    )
    .await;
    assert_eq!(member_ids(&r.body), vec![bob.clone()]);
    // The engine sees it at once: bob administers Payments now.
    assert!(
        s.check(&admin, &bob_name, pb::Permission::ChangeValue, &env.name)
            .await
            .allowed
    );
    let r = scim(
        &s,
        "PATCH",
        &format!("/Groups/{admins_id}"),
        k,
        Some(patch(
            json!([{"op": "replace", "path": "displayName", "value": "Payments/Bosses"}]),
        )),
        &[],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        scim(&s, "DELETE", &format!("/Groups/{admins_id}"), k, None, &[])
            .await
            .status,
        409
    );

    // Deleted: gone from FluxGate, memberships with it.
    assert_eq!(scim(&s, "DELETE", &path, k, None, &[]).await.status, 204);
    assert_eq!(scim(&s, "GET", &path, k, None, &[]).await.status, 404);
    let gone = s
        .groups()
        .get_group(authed(
            pb::GetGroupRequest {
                name: group_name.clone(),
            },
            &admin,
        ))
        .await;
    expect_code(gone, Code::NotFound);

    let events = s.audit_events();
    let by_sa = |action: &str| {
        events
            .iter()
            .filter(|e| e.action == action && e.actor_id.as_deref() == Some(sa.as_str()))
            .count()
    };
    assert_eq!(by_sa("group.created"), 1);
    assert!(by_sa("group.member_added") >= 5);
    assert!(by_sa("group.member_removed") >= 3);
    assert_eq!(by_sa("group.updated"), 1);
    assert_eq!(by_sa("group.deleted"), 1);
    s.stop().await;
}

/// The Python with scim2-tester, or `None` (said loudly) when it is missing and not required.
fn checker_python() -> Option<String> {
    let python = std::env::var("FLUXGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import scim2_tester, httpx2"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    if std::env::var("FLUXGATE_TEST_REQUIRE_PYTHON").is_ok_and(|v| v == "1" || v == "true") {
        panic!(
            "the SCIM compliance check is required (FLUXGATE_TEST_REQUIRE_PYTHON=1): {python} needs scim2-tester (tests/support/requirements.txt)"
        );
    }
    eprintln!("\n*** SKIPPING the SCIM compliance check: {python} has no scim2-tester.\n");
    None
}

/// scim2-tester, a third-party compliance checker, finds no error in what the server says it
/// supports.
async fn the_compliance_checker_finds_no_error(b: Backend) {
    let Some(python) = checker_python() else {
        return;
    };
    // Its groups have names of its own making: they go to the default portfolio.
    let s = TestServer::start_configured(b, |c| {
        c.scim.default_portfolio = Some("Payments".into());
    })
    .await;
    let admin = s.admin_token().await;
    let (key, _) = provisioning_key(&s, &admin, true).await;
    s.portfolio(&admin, "Payments").await;
    let base = format!("http://{}/scim/v2", s.addr);
    let args = vec![base, key];
    crate::harness::run_support_script(python, "scim_check.py", args, "scim-check: ok").await;
    s.stop().await;
}

fn bulk(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops})
}

fn new_user(bulk_id: &str, user_name: &str) -> Value {
    json!({"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name, "emails": [{"value": format!("{user_name}@example.com"), "primary": true}]}})
}

/// Bulk requests (RFC 7644 section 3.7): operations in order, each with its own status, one
/// failing without undoing another; bulkId references; failOnErrors; malformed requests
/// refused whole.
async fn bulk_requests_provision_many_at_once(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let (key, _) = provisioning_key(&s, &admin, true).await;
    let k = Some(key.as_str());
    // The portfolio the bulk group goes to, and a user whose userName the bulk request repeats.
    s.portfolio(&admin, "Payments").await;
    create(&s, k, "taken").await;

    let config = scim(&s, "GET", "/ServiceProviderConfig", k, None, &[]).await;
    assert_eq!(config.body["bulk"]["supported"], true);
    assert_eq!(config.body["bulk"]["maxOperations"], 1000);

    // Forty creations (one transaction), a group naming two of them, a clash, a patch and a
    // delete of what does not exist.
    let mut ops: Vec<Value> = (0..40)
        .map(|i| new_user(&format!("u{i}"), &format!("bulk{i:02}")))
        .collect();
    ops.push(json!({"method": "POST", "path": "/Groups", "bulkId": "g", "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Payments/Bulk", "members": [{"value": "bulkId:u3"}, {"value": "bulkId:u7"}]}}));
    ops.push(new_user("clash", "taken"));
    ops.push(json!({"method": "PATCH", "path": "/Users/bulkId:u5", "data": patch(json!([{"op": "replace", "path": "active", "value": false}]))}));
    ops.push(json!({"method": "DELETE", "path": format!("/Users/{}", uuid::Uuid::now_v7())}));
    ops.push(json!({"method": "POST", "path": "/Groups", "bulkId": "late", "data": {"displayName": "Payments/Late", "members": [{"value": "bulkId:nowhere"}]}}));
    let r = scim(&s, "POST", "/Bulk", k, Some(bulk(json!(ops))), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
    );
    let results = r.body["Operations"].as_array().unwrap();
    assert_eq!(results.len(), 45);
    let mut ids = std::collections::HashMap::new();
    for (i, res) in results[..40].iter().enumerate() {
        assert_eq!(res["status"], "201", "{res}");
        assert_eq!(res["bulkId"], format!("u{i}"));
        assert!(res["version"].as_str().unwrap().starts_with("W/"));
        let location = res["location"].as_str().unwrap();
        let id = location.rsplit('/').next().unwrap().to_owned();
        let got = scim(&s, "GET", &format!("/Users/{id}"), k, None, &[]).await;
        assert_eq!(got.body["userName"], format!("bulk{i:02}"));
        ids.insert(format!("u{i}"), id);
    }
    assert_eq!(results[40]["status"], "201", "{}", results[40]);
    let gid = results[40]["location"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let g = scim(&s, "GET", &format!("/Groups/{gid}"), k, None, &[]).await;
    let mut want = vec![ids["u3"].clone(), ids["u7"].clone()];
    want.sort();
    assert_eq!(member_ids(&g.body), want);
    assert!(g.body["displayName"].as_str().unwrap().contains("Bulk"));
    assert_eq!(results[41]["status"], "409", "{}", results[41]);
    assert_eq!(results[41]["response"]["scimType"], "uniqueness");
    assert_eq!(results[42]["status"], "200", "{}", results[42]);
    let u5 = scim(&s, "GET", &format!("/Users/{}", ids["u5"]), k, None, &[]).await;
    assert_eq!(u5.body["active"], false);
    assert_eq!(results[43]["status"], "404", "{}", results[43]);
    assert_eq!(results[44]["status"], "409", "{}", results[44]);

    // A clash inside a run of creations: the rest of the run is still created, one by one.
    let ops = json!([
        new_user("a", "run-a"),
        new_user("b", "taken"),
        new_user("c", "run-c")
    ]);
    let r = scim(&s, "POST", "/Bulk", k, Some(bulk(ops)), &[]).await;
    let statuses: Vec<&str> = r.body["Operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201", "409", "201"]);

    // Usernames made from userNames as a single create makes them, whether the run is written a
    // statement per step or one by one: the part before '@' when the userName is not a username
    // itself, numbered while taken (by FluxGate, or by another user of the same run).
    let with_email = |bulk_id: &str, user_name: &str, email: &str| json!({"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": {"userName": user_name, "emails": [{"value": email}]}});
    let runs = [
        vec![
            with_email("p1", "Pia@corp.example", "pia@corp.example"),
            with_email("p2", "quinn@corp.example", "quinn@corp.example"),
        ],
        vec![
            with_email("t1", "taken@corp.example", "taken2@corp.example"),
            with_email("t2", "rae@one.example", "rae@one.example"),
            with_email("t3", "rae@two.example", "rae@two.example"),
        ],
    ];
    let mut made = Vec::new();
    for ops in runs {
        let r = scim(&s, "POST", "/Bulk", k, Some(bulk(json!(ops))), &[]).await;
        for res in r.body["Operations"].as_array().unwrap() {
            assert_eq!(res["status"], "201", "{res}");
            let id = res["location"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            let got = scim(&s, "GET", &format!("/Users/{id}"), k, None, &[]).await;
            let user = user_of(&s, &admin, id).await;
            made.push((
                got.body["userName"].as_str().unwrap().to_owned(),
                user.username,
                user.email,
            ));
        }
    }
    let want = [
        ("Pia@corp.example", "pia", "pia@corp.example"),
        ("quinn@corp.example", "quinn", "quinn@corp.example"),
        ("taken@corp.example", "taken-2", "taken2@corp.example"),
        ("rae@one.example", "rae", "rae@one.example"),
        ("rae@two.example", "rae-2", "rae@two.example"),
    ];
    let made: Vec<(&str, &str, &str)> = made
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(made, want);
    // Each creation audited as one made alone is.
    let events = s
        .audit()
        .list_audit_events(authed(
            pb::ListAuditEventsRequest {
                action: "user.created".into(),
                page_size: 1000,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let provisioned = events
        .iter()
        .filter(|e| e.detail == "provisioned through SCIM")
        .count();
    // `taken`, the forty, the run's two, these five.
    assert_eq!(provisioned, 1 + 40 + 2 + 5, "{events:?}");

    // failOnErrors: processing stops after that many errors.
    let mut req = bulk(json!([
        new_user("x", "taken"),
        new_user("y", "never-made"),
        new_user("z", "never-made-2")
    ]));
    req["failOnErrors"] = json!(1);
    let r = scim(&s, "POST", "/Bulk", k, Some(req), &[]).await;
    assert_eq!(
        r.body["Operations"].as_array().unwrap().len(),
        1,
        "{}",
        r.body
    );
    let found = scim(
        &s,
        "GET",
        "/Users?filter=userName%20eq%20%22never-made%22",
        k,
        None,
        &[],
    )
    .await;
    assert_eq!(found.body["totalResults"], 0);

    // Malformed requests are refused whole, naming what is wrong.
    for (body, status, kind) in [
        (
            json!({"Operations": [new_user("a", "nope")]}),
            400,
            "invalidSyntax",
        ),
        (bulk(json!([])), 400, "invalidValue"),
        (
            bulk(json!([{"method": "GET", "path": "/Users"}])),
            400,
            "invalidValue",
        ),
        (
            bulk(json!([{"method": "POST", "path": "/Users", "data": {"userName": "nobulkid"}}])),
            400,
            "invalidValue",
        ),
        (
            bulk(json!([new_user("same", "one"), new_user("same", "two")])),
            400,
            "invalidValue",
        ),
        (
            bulk(json!([{"method": "POST", "path": "/Bulk", "bulkId": "b", "data": {}}])),
            400,
            "invalidValue",
        ),
        (
            bulk(json!(
                (0..1001)
                    .map(|i| new_user(&format!("m{i}"), &format!("m{i}")))
                    .collect::<Vec<_>>()
            )),
            413,
            "tooMany",
        ),
    ] {
        let r = scim(&s, "POST", "/Bulk", k, Some(body.clone()), &[]).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(error_of(&r).0, kind, "{}", r.body);
    }
    let r = scim(&s, "GET", "/Bulk", k, None, &[]).await;
    assert_eq!(r.status, 405);
    let found = scim(
        &s,
        "GET",
        "/Users?filter=userName%20eq%20%22one%22",
        k,
        None,
        &[],
    )
    .await;
    assert_eq!(
        found.body["totalResults"], 0,
        "nothing of a refused request is written"
    );
}

crate::both_backends!(
    bulk_requests_provision_many_at_once,
    the_compliance_checker_finds_no_error,
    groups_are_pushed_to_portfolio_groups,
    okta_provisions_users,
    entra_provisions_users,
    only_provisioning_keys_get_in_and_bad_input_writes_nothing
);
