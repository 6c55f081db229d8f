//! Passwordless login by e-mail one-time code: its settings, the codes, how they are kept, and how they reach
//! the user ([`CodeDelivery`]).
//!
//! A code is 6 random digits. The store keeps, per e-mail address, one challenge in the `meta` collection
//! (`id` = `loginCode:<SHA-256 of the address>`): the code's salted SHA-256 (never the code), when it expires
//! and how many verifications were tried. A challenge is kept for every address asked about, known or not
//! (with no code when no approved account has the address), so the answers never tell which addresses have
//! accounts. Writes are compare-and-swap on the challenge's version, so every verification counts, even
//! across API processes.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::secrets;

/// Digits in a code.
pub const CODE_DIGITS: usize = 6;

/// How codes reach their user. Implementations: [`SmtpDelivery`](super::smtp::SmtpDelivery) (e-mail) and
/// [`LogDelivery`] (development).
#[async_trait]
pub trait CodeDelivery: Debug + Send + Sync {
    /// Sends `code` to `email`; it stays valid for `valid_for`. Called in the background, after the request
    /// was answered, so a slow delivery does not tell which addresses have accounts; an error is logged (so it
    /// must not hold the code) and cannot change that answer.
    async fn deliver(&self, email: &str, code: &str, valid_for: Duration) -> Result<(), DeliveryError>;
}

/// A code that could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("the login code was not delivered: {0}")]
pub struct DeliveryError(pub String);

/// Development delivery: writes the code to the log (a warning, so it shows at the default level). Anyone
/// who reads the log can log in as anyone who asks for a code: never use it in production.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogDelivery;

#[async_trait]
impl CodeDelivery for LogDelivery {
    async fn deliver(&self, email: &str, code: &str, valid_for: Duration) -> Result<(), DeliveryError> {
        tracing::warn!(
            %email,
            %code,
            valid_seconds = valid_for.as_secs(),
            "login code (log delivery, for development only: the code is not e-mailed)"
        );
        Ok(())
    }
}

/// Passwordless login settings; `ApiSettings::otp` is `None` (the default) to keep it off.
#[derive(Debug, Clone)]
pub struct OtpSettings {
    pub delivery: Arc<dyn CodeDelivery>,
    /// How long a code is valid; no new code is sent to the same address meanwhile.
    pub ttl: Duration,
    /// Verifications allowed per code, right or wrong.
    pub max_attempts: u32,
}

impl OtpSettings {
    /// Ten-minute codes, five tries each, sent by `delivery`.
    pub fn new(delivery: Arc<dyn CodeDelivery>) -> Self {
        Self { delivery, ttl: Duration::from_secs(600), max_attempts: 5 }
    }
}

/// The challenge kept for one e-mail address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    pub id: String,
    #[serde(default)]
    pub version: u64,
    /// Always `loginCode`.
    pub kind: String,
    /// The salted SHA-256 of the code; `None` when no code was sent (no approved account has the address).
    pub code_hash: Option<String>,
    pub salt: String,
    /// Unix milliseconds after which the code is refused and a new one may be asked for.
    pub expires_at_ms: i64,
    /// Verifications tried so far.
    pub attempts: u32,
}

impl Challenge {
    /// A challenge for `email` valid until `expires_at_ms`, holding `code` when one is sent.
    pub fn new(email: &str, code: Option<&str>, expires_at_ms: i64) -> Self {
        let salt = secrets::random_token();
        Self {
            id: challenge_id(email),
            version: 0,
            kind: "loginCode".to_owned(),
            code_hash: code.map(|c| code_hash(&salt, c)),
            salt,
            expires_at_ms,
            attempts: 0,
        }
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms <= now_ms
    }

    /// Whether `code` is this challenge's code (constant time; false when no code was sent).
    pub fn matches(&self, code: &str) -> bool {
        self.code_hash.as_deref().is_some_and(|h| secrets::same_secret(h, &code_hash(&self.salt, code)))
    }

    /// Whole seconds until it expires (at least 1).
    pub fn seconds_left(&self, now_ms: i64) -> u64 {
        u64::try_from((self.expires_at_ms - now_ms + 999) / 1000).unwrap_or(1).max(1)
    }
}

/// The ID of the challenge for a normalised e-mail address.
pub fn challenge_id(email: &str) -> String {
    format!("loginCode:{}", secrets::token_hash(email))
}

fn code_hash(salt: &str, code: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(code.as_bytes());
    hex::encode(h.finalize())
}

/// A fresh code: [`CODE_DIGITS`] uniformly random digits.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_DIGITS).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

/// A code as typed: surrounding and inner spaces dropped; `None` unless it is [`CODE_DIGITS`] digits.
pub fn clean_code(typed: &str) -> Option<String> {
    let code: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    (code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_random_digits() {
        let codes: Vec<String> = (0..50).map(|_| new_code()).collect();
        assert!(codes.iter().all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        let mut distinct = codes.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 40, "random: {codes:?}");
    }

    #[test]
    fn challenges_keep_a_salted_hash_only() {
        let c = Challenge::new("ann@example.org", Some("123456"), 10_000);
        let text = serde_json::to_string(&c).unwrap();
        assert!(!text.contains("123456"), "{text}");
        assert!(c.matches("123456") && !c.matches("123457"));
        assert_ne!(c.code_hash, Challenge::new("ann@example.org", Some("123456"), 10_000).code_hash, "salted");
        assert!(!Challenge::new("ann@example.org", None, 10_000).matches("123456"), "no code, no match");
        assert_eq!(c.id, challenge_id("ann@example.org"));
        assert!(!c.expired(9_999) && c.expired(10_000));
        assert_eq!((c.seconds_left(8_500), c.seconds_left(9_999)), (2, 1));
    }

    #[test]
    fn typed_codes_are_cleaned() {
        assert_eq!(clean_code(" 123 456 ").as_deref(), Some("123456"));
        for bad in ["12345", "1234567", "12345a", "", "１２３４５６"] {
            assert_eq!(clean_code(bad), None, "{bad}");
        }
    }
}
