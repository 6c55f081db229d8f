//! E-mail delivery of login codes over SMTP: [`SmtpDelivery`].
//!
//! The server is given as a URL:
//!
//! | URL | connection | default port |
//! |---|---|---|
//! | `smtp://user:password@mail.example.com:587` | STARTTLS, required (none offered: no mail) | 587 |
//! | `smtps://user:password@mail.example.com:465` | TLS from the first byte (implicit TLS) | 465 |
//! | `smtp://relay.internal:25?tls=none` | plain SMTP, for a local relay or tests; credentials are refused | 25 |
//!
//! `?tls=starttls` may be written out; user and password are percent-decoded (`%40` for `@`). Server
//! certificates are checked against the Mozilla root certificates. Each code is one connection; it gives up
//! after 30 seconds.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use percent_encoding::percent_decode_str;
use url::{Host, Url};

use super::otp::{CodeDelivery, DeliveryError};

/// How long one delivery may take (connecting, TLS, the whole SMTP dialogue).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The subject of login-code e-mails unless [`SmtpDelivery::with_subject`] changes it.
pub const DEFAULT_SUBJECT: &str = "Your TraffoFlex login code";

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP upgraded with STARTTLS; a server that does not offer it gets no mail (`smtp://`).
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// No encryption (`smtp://…?tls=none`): local relays and tests only.
    None,
}

impl SmtpTls {
    /// `starttls`, `implicit` or `none`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartTls => "starttls",
            Self::Implicit => "implicit",
            Self::None => "none",
        }
    }
}

impl fmt::Display for SmtpTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::StartTls => "STARTTLS",
            Self::Implicit => "implicit TLS",
            Self::None => "no TLS",
        })
    }
}

/// SMTP settings that cannot work; the message says what to fix (and never repeats a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpSettingsError {
    /// The server URL.
    #[error("{0}")]
    Url(String),
    /// The sender address.
    #[error("{0}")]
    From(String),
}

fn bad(message: impl Into<String>) -> SmtpSettingsError {
    SmtpSettingsError::Url(message.into())
}

const URL_FORMS: &str = concat!(
    "smtp://user:password@host:587 (STARTTLS), smtps://user:password@host:465 (implicit TLS) ",
    "or smtp://host:25?tls=none"
);

/// Sends each code in a plain-text e-mail over SMTP.
#[derive(Clone)]
pub struct SmtpDelivery {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, for logs and errors (never the credentials).
    server: String,
    tls: SmtpTls,
    from: Mailbox,
    subject: String,
}

impl fmt::Debug for SmtpDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpDelivery")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("from", &self.from.to_string())
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl SmtpDelivery {
    /// A sender through the server `url` (see the module documentation for its forms), writing as `from`
    /// (`no-reply@example.com` or `TraffoFlex <no-reply@example.com>`). Nothing is connected yet.
    pub fn new(url: &str, from: &str) -> Result<Self, SmtpSettingsError> {
        let from: Mailbox = from.trim().parse().map_err(|e| {
            SmtpSettingsError::From(format!(
                "the sender `{from}` is not an e-mail address ({e}); write no-reply@example.com or \
                 \"TraffoFlex <no-reply@example.com>\""
            ))
        })?;
        let target = parse_url(url)?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(target.host.clone())
            .port(target.port)
            .timeout(Some(SEND_TIMEOUT));
        let tls_parameters = || {
            TlsParameters::new(target.host.clone())
                .map_err(|e| bad(format!("the SMTP server name `{}` cannot be used for TLS: {e}", target.host)))
        };
        builder = match target.tls {
            SmtpTls::StartTls => builder.tls(Tls::Required(tls_parameters()?)),
            SmtpTls::Implicit => builder.tls(Tls::Wrapper(tls_parameters()?)),
            SmtpTls::None => builder.tls(Tls::None),
        };
        if let Some((user, password)) = target.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        let server = match target.host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{}]:{}", target.host, target.port),
            Err(_) => format!("{}:{}", target.host, target.port),
        };
        Ok(Self { transport: builder.build(), server, tls: target.tls, from, subject: DEFAULT_SUBJECT.to_owned() })
    }

    /// The same sender with another subject line.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// The server, as `host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn tls(&self) -> SmtpTls {
        self.tls
    }

    /// The sender, as it appears in `From`.
    pub fn from(&self) -> String {
        self.from.to_string()
    }

    fn message(&self, to: Address, code: &str, valid_for: Duration) -> Result<Message, DeliveryError> {
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(self.subject.clone())
            .message_id(None)
            .header(ContentType::TEXT_PLAIN)
            .body(message_text(code, valid_for))
            .map_err(|e| DeliveryError(format!("cannot build the e-mail: {e}")))
    }
}

#[async_trait]
impl CodeDelivery for SmtpDelivery {
    async fn deliver(&self, email: &str, code: &str, valid_for: Duration) -> Result<(), DeliveryError> {
        let to: Address =
            email.parse().map_err(|e| DeliveryError(format!("the address is not one SMTP can send to: {e}")))?;
        let message = self.message(to, code, valid_for)?;
        match self.transport.send(message).await {
            Ok(response) => {
                let reply = response.code().to_string();
                tracing::info!(server = %self.server, tls = self.tls.as_str(), %reply, "login code e-mailed");
                Ok(())
            }
            Err(e) => Err(DeliveryError(format!("SMTP server {} ({}): {e}", self.server, self.tls))),
        }
    }
}

/// The text of a login-code e-mail.
pub fn message_text(code: &str, valid_for: Duration) -> String {
    format!(
        "Your TraffoFlex login code is:\n\
         \n\
         \x20   {code}\n\
         \n\
         Enter it on the login page. It is valid for {} and works once.\n\
         \n\
         If you did not ask for a login code, you can ignore this e-mail; the code expires by itself.\n",
        how_long(valid_for)
    )
}

/// `10 minutes`, `1 minute`, `90 seconds`.
fn how_long(d: Duration) -> String {
    let secs = d.as_secs().max(1);
    let (n, unit) = if secs.is_multiple_of(60) { (secs / 60, "minute") } else { (secs, "second") };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Where and how to connect, from the URL.
struct Target {
    host: String,
    port: u16,
    tls: SmtpTls,
    credentials: Option<(String, String)>,
}

fn decoded(part: &str, what: &str) -> Result<String, SmtpSettingsError> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad(format!("the SMTP {what} is not valid percent-encoded UTF-8")))
}

fn parse_url(text: &str) -> Result<Target, SmtpSettingsError> {
    let text = text.trim();
    // The URL may hold a password: errors never repeat it.
    let url = Url::parse(text).map_err(|e| bad(format!("the SMTP URL is not a URL ({e}); write {URL_FORMS}")))?;
    let implicit = match url.scheme() {
        "smtp" => false,
        "smtps" => true,
        _ if !text.contains("://") => {
            return Err(bad(format!("the SMTP URL must start with smtp:// or smtps://; write {URL_FORMS}")));
        }
        other => return Err(bad(format!("the SMTP URL must start with smtp:// or smtps://, not {other}://"))),
    };
    let host = match url.host() {
        Some(Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(Host::Ipv4(a)) => a.to_string(),
        Some(Host::Ipv6(a)) => a.to_string(),
        _ => return Err(bad(format!("the SMTP URL names no server; write {URL_FORMS}"))),
    };
    if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        return Err(bad("the SMTP URL has a path or fragment; give only the server, its port and ?tls"));
    }
    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), tls) {
            ("tls", None) => tls = Some(value.into_owned()),
            ("tls", Some(_)) => return Err(bad("the SMTP URL gives ?tls twice")),
            (other, _) => {
                return Err(bad(format!("the SMTP URL has an unknown setting `{other}`; only ?tls is known")));
            }
        }
    }
    let tls = match (implicit, tls.as_deref()) {
        (true, None | Some("implicit")) => SmtpTls::Implicit,
        (true, Some(other)) => {
            return Err(bad(format!("smtps:// always uses TLS; drop ?tls={other} (or use smtp:// with ?tls=none)")));
        }
        (false, None | Some("starttls")) => SmtpTls::StartTls,
        (false, Some("none")) => SmtpTls::None,
        (false, Some(other)) => {
            return Err(bad(format!(
                "unknown ?tls={other} in the SMTP URL: starttls (the default for smtp://) or none; for implicit TLS \
                 use smtps://"
            )));
        }
    };
    let port = url.port().unwrap_or(match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Implicit => 465,
        SmtpTls::None => 25,
    });
    let user = decoded(url.username(), "user")?;
    let password = url.password().map(|p| decoded(p, "password")).transpose()?.unwrap_or_default();
    let credentials = match (user.is_empty(), password.is_empty()) {
        (true, true) => None,
        (false, false) => Some((user, password)),
        (true, false) => return Err(bad("the SMTP URL has a password but no user (smtp://user:password@host)")),
        (false, true) => return Err(bad("the SMTP URL has a user but no password (smtp://user:password@host)")),
    };
    if credentials.is_some() && tls == SmtpTls::None {
        return Err(bad(
            "the SMTP URL has credentials but ?tls=none: they would cross the network unencrypted; use STARTTLS \
             (smtp://) or smtps://, or a relay that needs no login",
        ));
    }
    Ok(Target { host, port, tls, credentials })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "TraffoFlex <no-reply@example.com>";

    fn target(url: &str) -> Target {
        parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn url_forms() {
        let t = target("smtp://ann%40example.com:p%3Ass@mail.example.com");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("mail.example.com", 587, SmtpTls::StartTls));
        assert_eq!(t.credentials, Some(("ann@example.com".to_owned(), "p:ss".to_owned())));
        let t = target("smtp://u:p@mail.example.com:2525?tls=starttls");
        assert_eq!((t.port, t.tls), (2525, SmtpTls::StartTls));
        let t = target("smtps://u:p@mail.example.com");
        assert_eq!((t.port, t.tls), (465, SmtpTls::Implicit));
        let t = target("smtp://127.0.0.1?tls=none");
        assert_eq!((t.host.as_str(), t.port, t.tls, t.credentials), ("127.0.0.1", 25, SmtpTls::None, None));
        let t = target(" smtp://[::1]:1025/?tls=none ");
        assert_eq!((t.host.as_str(), t.port), ("::1", 1025));

        let d = SmtpDelivery::new("smtp://[::1]:1025?tls=none", FROM).unwrap();
        assert_eq!((d.server(), d.tls(), d.from().as_str()), ("[::1]:1025", SmtpTls::None, FROM));
        let d = SmtpDelivery::new("smtps://user:secret-pass@mail.example.com", "no-reply@example.com").unwrap();
        assert_eq!((d.server(), d.tls()), ("mail.example.com:465", SmtpTls::Implicit));
        assert!(!format!("{d:?}").contains("secret-pass"), "{d:?}");
    }

    #[test]
    fn bad_settings_are_refused_with_a_clear_message() {
        let refused = |url: &str, from: &str| SmtpDelivery::new(url, from).expect_err(url).to_string();
        let cases = [
            ("mail.example.com:587", FROM, "must start with smtp:// or smtps://; write smtp://user:password@host:587"),
            ("", FROM, "not a URL"),
            ("http://mail.example.com", FROM, "must start with smtp:// or smtps://, not http://"),
            ("smtp://", FROM, "names no server"),
            ("smtp://mail.example.com?tls=ssl", FROM, "unknown ?tls=ssl"),
            ("smtp://mail.example.com?tls=none&tls=starttls", FROM, "?tls twice"),
            ("smtp://mail.example.com?timeout=5", FROM, "unknown setting `timeout`"),
            ("smtps://mail.example.com?tls=none", FROM, "smtps:// always uses TLS"),
            ("smtp://mail.example.com/relay", FROM, "path"),
            ("smtp://:secret-pass@mail.example.com", FROM, "a password but no user"),
            ("smtp://ann@mail.example.com", FROM, "a user but no password"),
            ("smtp://ann:secret-pass@mail.example.com?tls=none", FROM, "unencrypted"),
            ("smtp://mail.example.com", "no-reply", "the sender `no-reply` is not an e-mail address"),
            ("smtp://mail.example.com", "", "is not an e-mail address"),
        ];
        for (url, from, expected) in cases {
            let message = refused(url, from);
            assert!(message.contains(expected), "{url} / {from}: {message}");
            assert!(!message.contains("secret-pass"), "the password is never repeated: {message}");
        }
        // Which setting is wrong.
        assert!(matches!(SmtpDelivery::new("smtp://mail.example.com", "nobody"), Err(SmtpSettingsError::From(_))));
        assert!(matches!(SmtpDelivery::new("smtp://", FROM), Err(SmtpSettingsError::Url(_))));
    }

    #[test]
    fn the_message_says_what_the_code_is_for() {
        let d = SmtpDelivery::new("smtp://127.0.0.1:2525?tls=none", FROM).unwrap().with_subject("Login code");
        let message = d.message("ann@example.org".parse().unwrap(), "042917", Duration::from_secs(600)).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        for part in [
            "From: TraffoFlex <no-reply@example.com>",
            "To: ann@example.org",
            "Subject: Login code",
            "Content-Type: text/plain; charset=utf-8",
            "Message-ID: <",
            "    042917\r\n",
            "valid for 10 minutes and works once",
            "If you did not ask for a login code, you can ignore this e-mail",
        ] {
            assert!(text.contains(part), "{part:?} in:\n{text}");
        }
        assert_eq!(message.envelope().to(), ["ann@example.org".parse::<Address>().unwrap()]);
        assert_eq!(
            (how_long(Duration::from_secs(60)), how_long(Duration::from_secs(90)), how_long(Duration::ZERO)),
            ("1 minute".to_owned(), "90 seconds".to_owned(), "1 second".to_owned())
        );
    }
}
