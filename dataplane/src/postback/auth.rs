//! Postback authentication: the IP allowlist, the shared token (compared in constant time) and the HMAC-SHA256
//! signature header `X-Signature: t=<unix>,v1=<hex>` over `"<t>.<raw query or body>"` with a timestamp
//! window. Pure: the caller passes the clock.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::normalize::Params;

/// Parameters that may carry the token (after the network's own `tokenParam`).
pub const TOKEN_PARAMS: &[&str] = &["token", "secret", "key"];

/// Why a postback was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the postback has no token")]
    MissingToken,
    #[error("the token is wrong")]
    WrongToken,
    #[error("the X-Signature header is missing")]
    MissingSignature,
    #[error("the X-Signature header is not `t=<unix seconds>,v1=<hex>`")]
    MalformedSignature,
    #[error("the signature's timestamp is {0} s away from now, outside the window")]
    Expired(i64),
    #[error("the signature does not match")]
    BadSignature,
    #[error("the network has no secret configured")]
    NotConfigured,
}

/// Whether `ip` is allowed by `allowlist` (an empty list allows everyone).
pub fn ip_allowed(allowlist: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    allowlist.is_empty() || allowlist.iter().any(|net| net.contains(&ip))
}

/// Parses allowlist entries (CIDRs or single addresses); bad ones are returned apart.
pub fn parse_allowlist(entries: &[String]) -> (Vec<IpNet>, Vec<String>) {
    let mut nets = Vec::new();
    let mut bad = Vec::new();
    for e in entries {
        match e.parse::<IpNet>() {
            Ok(n) => nets.push(n),
            Err(_) => match e.parse::<IpAddr>() {
                Ok(ip) => nets.push(IpNet::from(ip)),
                Err(_) => bad.push(e.clone()),
            },
        }
    }
    (nets, bad)
}

/// Checks the token in `params` (`token_param` first, then [`TOKEN_PARAMS`]) against `expected`.
pub fn check_token(params: &Params, token_param: Option<&str>, expected: Option<&str>) -> Result<(), AuthError> {
    let expected = expected.filter(|t| !t.is_empty()).ok_or(AuthError::NotConfigured)?;
    let given = token_param
        .into_iter()
        .chain(TOKEN_PARAMS.iter().copied())
        .find_map(|name| params.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v))
        .ok_or(AuthError::MissingToken)?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) { Ok(()) } else { Err(AuthError::WrongToken) }
}

/// Checks `X-Signature` (`header`) over `payload` with `secret`, the timestamp within `window` s of `now`.
pub fn check_signature(
    header: Option<&str>,
    payload: &[u8],
    secret: Option<&str>,
    window: i64,
    now: i64,
) -> Result<(), AuthError> {
    let secret = secret.filter(|s| !s.is_empty()).ok_or(AuthError::NotConfigured)?;
    let header = header.ok_or(AuthError::MissingSignature)?;
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let t_str = t.ok_or(AuthError::MalformedSignature)?;
    let ts: i64 = t_str.parse().map_err(|_| AuthError::MalformedSignature)?;
    let mac_given = hex::decode(v1.ok_or(AuthError::MalformedSignature)?).map_err(|_| AuthError::MalformedSignature)?;
    let skew = now.saturating_sub(ts);
    if skew.saturating_abs() > window {
        return Err(AuthError::Expired(skew));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| AuthError::NotConfigured)?;
    mac.update(t_str.as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.verify_slice(&mac_given).map_err(|_| AuthError::BadSignature)
}

/// The `X-Signature` value for `payload` at `t` (for clients and tests).
pub fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn tokens() {
        assert_eq!(check_token(&p(&[("token", "s3")]), None, Some("s3")), Ok(()));
        assert_eq!(check_token(&p(&[("secret", "s3")]), None, Some("s3")), Ok(()));
        assert_eq!(check_token(&p(&[("key", "s3")]), None, Some("s3")), Ok(()));
        assert_eq!(check_token(&p(&[("api", "s3")]), Some("api"), Some("s3")), Ok(()));
        assert_eq!(check_token(&p(&[("token", "s4")]), None, Some("s3")), Err(AuthError::WrongToken));
        assert_eq!(check_token(&p(&[("token", "s")]), None, Some("s3")), Err(AuthError::WrongToken));
        assert_eq!(check_token(&p(&[]), None, Some("s3")), Err(AuthError::MissingToken));
        assert_eq!(check_token(&p(&[("token", "x")]), None, None), Err(AuthError::NotConfigured));
    }

    #[test]
    fn signatures() {
        let sig = sign("k", 1000, b"a=1");
        assert_eq!(check_signature(Some(&sig), b"a=1", Some("k"), 300, 1100), Ok(()));
        assert_eq!(check_signature(Some(&sig), b"a=2", Some("k"), 300, 1100), Err(AuthError::BadSignature));
        assert_eq!(check_signature(Some(&sig), b"a=1", Some("j"), 300, 1100), Err(AuthError::BadSignature));
        assert_eq!(check_signature(Some(&sig), b"a=1", Some("k"), 300, 1301), Err(AuthError::Expired(301)));
        assert_eq!(check_signature(Some(&sig), b"a=1", Some("k"), 300, 600), Err(AuthError::Expired(-400)));
        assert_eq!(check_signature(None, b"a=1", Some("k"), 300, 1000), Err(AuthError::MissingSignature));
        for bad in ["", "t=x,v1=00", "t=1000", "t=1000,v1=zz", "v1=00"] {
            assert_eq!(
                check_signature(Some(bad), b"", Some("k"), 300, 1000),
                Err(AuthError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn allowlists() {
        let (nets, bad) = parse_allowlist(&["10.0.0.0/8".into(), "2001:db8::1".into(), "nope".into()]);
        assert_eq!(bad, vec!["nope".to_owned()]);
        assert!(ip_allowed(&nets, "10.1.2.3".parse().unwrap()));
        assert!(ip_allowed(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(ip_allowed(&nets, "2001:db8::1".parse().unwrap()));
        assert!(!ip_allowed(&nets, "11.0.0.1".parse().unwrap()));
        assert!(ip_allowed(&[], "11.0.0.1".parse().unwrap()));
    }
}
