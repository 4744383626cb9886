//! Sessions of browsers. A caller that sends `x-fluxgate-session-cookie: 1` (the web console)
//! never sees its refresh token: Login, RefreshSession and ChangePassword put it in an HttpOnly,
//! SameSite=Strict cookie scoped to the AuthService's path and blank it in the reply; an empty
//! `refresh_token` in RefreshSession is then read from that cookie; Logout clears it.
//!
//! The cookie is only honoured with the header, which a cross-site page cannot send without a
//! CORS preflight the server never answers, and gRPC-Web's content type is not one a form can
//! post: the cookie cannot be ridden by another site.

use tonic::metadata::{MetadataMap, MetadataValue};

use fluxgate_proto::v1 as pb;

/// The header by which a browser asks for the cookie.
pub const COOKIE_MODE_HEADER: &str = "x-fluxgate-session-cookie";
/// The cookie's name.
pub const COOKIE: &str = "fluxgate_refresh";
/// The only path the browser sends it to.
const COOKIE_PATH: &str = "/fluxgate.v1.AuthService/";

/// Whether the caller asked for the refresh token in a cookie.
pub fn wanted(md: &MetadataMap) -> bool {
    md.get(COOKIE_MODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1")
}

/// The refresh token of the cookie, for a cookie-mode caller that sent none in the message.
pub fn refresh_token(md: &MetadataMap) -> Option<String> {
    if !wanted(md) {
        return None;
    }
    md.get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Moves the refresh token of `tokens` into a cookie on `reply`'s metadata, when asked for.
pub fn hand_over(
    asked: bool,
    secure: bool,
    tokens: &mut Option<pb::SessionTokens>,
    reply: &mut MetadataMap,
) {
    let Some(t) = tokens.as_mut().filter(|_| asked) else {
        return;
    };
    let token = std::mem::take(&mut t.refresh_token);
    let max_age = t
        .refresh_token_expire_time
        .as_ref()
        .map(|e| e.seconds - fluxgate_core::time::now_micros() / 1_000_000)
        .unwrap_or(0)
        .max(0);
    set(reply, &format!("{COOKIE}={token}"), max_age, secure);
}

/// Clears the cookie, when the caller is a browser.
pub fn clear(asked: bool, secure: bool, reply: &mut MetadataMap) {
    if asked {
        set(reply, &format!("{COOKIE}="), 0, secure);
    }
}

fn set(reply: &mut MetadataMap, pair: &str, max_age: i64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie =
        format!("{pair}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    // Tokens are URL-safe base64 and the attributes ASCII: the value is always valid.
    if let Ok(v) = MetadataValue::try_from(cookie) {
        reply.append("set-cookie", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.append(*k, MetadataValue::from_static(v));
        }
        m
    }

    #[test]
    fn the_cookie_is_read_only_with_the_header() {
        let with = md(&[
            (COOKIE_MODE_HEADER, "1"),
            ("cookie", "a=b; fluxgate_refresh=tok-1; c=d"),
        ]);
        assert_eq!(refresh_token(&with).as_deref(), Some("tok-1"));
        let without = md(&[("cookie", "fluxgate_refresh=tok-1")]);
        assert_eq!(refresh_token(&without), None);
        let empty = md(&[(COOKIE_MODE_HEADER, "1"), ("cookie", "fluxgate_refresh=")]);
        assert_eq!(refresh_token(&empty), None);
    }

    #[test]
    fn the_token_leaves_the_reply_for_an_http_only_cookie() {
        let mut tokens = Some(pb::SessionTokens {
            refresh_token: "secret".into(),
            refresh_token_expire_time: Some(prost_types::Timestamp {
                seconds: fluxgate_core::time::now_micros() / 1_000_000 + 3600,
                nanos: 0,
            }),
            ..Default::default()
        });
        let mut reply = MetadataMap::new();
        hand_over(true, true, &mut tokens, &mut reply);
        assert_eq!(tokens.unwrap().refresh_token, "");
        let c = reply
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(c.starts_with("fluxgate_refresh=secret; Path=/fluxgate.v1.AuthService/; Max-Age="));
        assert!(c.ends_with("HttpOnly; SameSite=Strict; Secure"), "{c}");

        let mut kept = Some(pb::SessionTokens {
            refresh_token: "secret".into(),
            ..Default::default()
        });
        let mut reply = MetadataMap::new();
        hand_over(false, false, &mut kept, &mut reply);
        assert_eq!(kept.unwrap().refresh_token, "secret");
        assert!(reply.get("set-cookie").is_none());
    }
}
