//! Login by e-mail code with the codes e-mailed over SMTP, to a small fake SMTP server run by the test.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, code};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use traffoflex_api::ApiSettings;
use traffoflex_api::auth::otp::{CodeDelivery, OtpSettings, challenge_id};
use traffoflex_api::auth::smtp::{SmtpDelivery, SmtpTls};
use traffoflex_core::store::Collection;

const FROM: &str = "TraffoFlex <no-reply@traffoflex.test>";

/// One message the fake server accepted.
#[derive(Debug, Clone)]
struct Mail {
    /// `MAIL FROM`.
    from: String,
    /// `RCPT TO`, in order.
    to: Vec<String>,
    /// What came after `DATA`, up to the final `.` (dot-stuffing undone).
    data: String,
}

impl Mail {
    fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    /// Every run of exactly 6 digits in the body.
    fn codes(&self) -> Vec<String> {
        six_digit_runs(self.body())
    }
}

fn six_digit_runs(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit()).filter(|run| run.len() == 6).map(str::to_owned).collect()
}

/// A fake SMTP server on a free loopback port: no TLS, no AUTH, it takes every message (or refuses every
/// recipient) and keeps what it got.
struct FakeSmtp {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeSmtp {
    async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A server that answers every `RCPT TO` with 550.
    async fn refusing_recipients() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(refuse_recipients: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&mails);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let mails = Arc::clone(&kept);
                tokio::spawn(async move {
                    let _ = smtp_session(stream, mails, refuse_recipients).await;
                });
            }
        });
        Self { addr, mails, server }
    }

    /// The URL of this server, in plain mode.
    fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    /// The messages received so far, once there are at least `n` (waiting up to 5 s: delivery runs after
    /// the answer).
    async fn wait_for(&self, n: usize) -> Vec<Mail> {
        for _ in 0..250 {
            let mails = self.mails.lock().unwrap().clone();
            if mails.len() >= n {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the SMTP server did not get {n} message(s): {:?}", self.mails.lock().unwrap());
    }

    /// The messages received so far, after giving a delivery that should not happen time to show up.
    async fn settled(&self) -> Vec<Mail> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.mails.lock().unwrap().clone()
    }
}

/// The address in `MAIL FROM:<a>` or `RCPT TO:<a>`.
fn path_of(line: &str) -> String {
    let rest = line.split_once(':').map_or("", |(_, rest)| rest);
    rest.trim().trim_start_matches('<').split('>').next().unwrap_or_default().to_owned()
}

/// Just enough SMTP: greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
async fn smtp_session(stream: TcpStream, mails: Arc<Mutex<Vec<Mail>>>, refuse: bool) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 fake.smtp.test ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
            b"250 fake.smtp.test\r\n"
        } else if command.starts_with("MAIL FROM:") {
            from = path_of(&line);
            b"250 2.1.0 OK\r\n"
        } else if command.starts_with("RCPT TO:") && refuse {
            b"550 5.1.1 no such mailbox\r\n"
        } else if command.starts_with("RCPT TO:") {
            to.push(path_of(&line));
            b"250 2.1.5 OK\r\n"
        } else if command.starts_with("DATA") {
            write.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if read.read_line(&mut l).await? == 0 {
                    return Ok(());
                }
                // The line before ended with CRLF, so this is "\r\n.\r\n".
                if l == ".\r\n" {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            mails.lock().unwrap().push(Mail { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data });
            b"250 2.0.0 queued\r\n"
        } else if command.starts_with("RSET") {
            (from, to) = (String::new(), Vec::new());
            b"250 2.0.0 OK\r\n"
        } else if command.starts_with("NOOP") {
            b"250 2.0.0 OK\r\n"
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 5.5.1 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}

fn smtp_settings(url: &str) -> (ApiSettings, Arc<SmtpDelivery>) {
    let delivery = Arc::new(SmtpDelivery::new(url, FROM).unwrap());
    let otp = OtpSettings::new(Arc::clone(&delivery) as Arc<dyn CodeDelivery>);
    (ApiSettings { otp: Some(otp), ..ApiSettings::default() }, delivery)
}

async fn ask_code(api: &Api, email: &str) -> (StatusCode, Value) {
    api.anonymous(reqwest::Method::POST, "/auth/otp/request", Some(json!({"email": email}))).await
}

async fn verify_code(api: &Api, email: &str, code: &str) -> (StatusCode, Value) {
    api.anonymous(reqwest::Method::POST, "/auth/otp/verify", Some(json!({"email": email, "code": code}))).await
}

/// A port on which nothing listens.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_code_is_emailed_and_logs_in() {
    let smtp = FakeSmtp::start().await;
    let (settings, delivery) = smtp_settings(&smtp.url());
    assert_eq!((delivery.tls(), delivery.server()), (SmtpTls::None, smtp.addr.to_string().as_str()));
    let api = Api::sqlite_with(settings).await;
    api.user("ann@example.org", "viewer", None).await;

    let (status, body) = ask_code(&api, " Ann@Example.org ").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(
        (mail.from.as_str(), mail.to.as_slice()),
        ("no-reply@traffoflex.test", &["ann@example.org".to_owned()][..])
    );
    for header in ["From: TraffoFlex <no-reply@traffoflex.test>\r\n", "To: ann@example.org\r\n"] {
        assert!(mail.data.contains(header), "{header:?} in {}", mail.data);
    }
    assert!(mail.data.contains("Subject: Your TraffoFlex login code\r\n"), "{}", mail.data);
    assert!(mail.body().contains("valid for 10 minutes"), "{}", mail.body());
    assert!(mail.body().contains("you can ignore this e-mail"), "{}", mail.body());
    let codes = mail.codes();
    assert_eq!(codes.len(), 1, "one 6-digit code in {}", mail.body());
    // The answer does not hold the code.
    assert!(!body.to_string().contains(&codes[0]), "{body}");

    let (status, body) = verify_code(&api, "ann@example.org", &codes[0]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["email"], "ann@example.org");
    assert!(body["csrfToken"].as_str().is_some_and(|t| !t.is_empty()), "{body}");

    // Addresses without an approved account get the same answer and no mail.
    let (status, _) = api
        .anonymous(
            reqwest::Method::POST,
            "/auth/register",
            Some(json!({"email": "bob@example.org", "password": "user-password-1", "name": "Bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for email in ["bob@example.org", "nobody@example.org"] {
        let (status, answer) = ask_code(&api, email).await;
        assert_eq!((status, &answer), (StatusCode::ACCEPTED, &body_of_request()), "{email}");
    }
    assert_eq!(smtp.settled().await.len(), 1, "only approved accounts are e-mailed");
}

/// What every code request answers with the default validity.
fn body_of_request() -> Value {
    json!({
        "status": "requested",
        "expiresInSeconds": 600,
        "message": "if an approved account has this address, a code was sent to it",
    })
}

#[tokio::test]
async fn an_unreachable_server_changes_nothing_in_the_answer() {
    let port = closed_port().await;
    let (settings, delivery) = smtp_settings(&format!("smtp://127.0.0.1:{port}?tls=none"));
    let api = Api::sqlite_with(settings).await;

    // The same answer as for an address nobody has.
    let (status, body) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!((status, &body), (StatusCode::ACCEPTED, &body_of_request()));
    let (status, other) = ask_code(&api, "nobody@example.org").await;
    assert_eq!((status, &other), (StatusCode::ACCEPTED, &body));
    assert!(six_digit_runs(&body.to_string()).is_empty(), "{body}");

    // A code was made and is kept (as a hash), but it reached nobody: no login by it can be completed, and
    // asking again waits for it to expire, as for every address.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let challenge = api.store.get(Collection::Meta, &challenge_id(support::ADMIN_EMAIL)).await.unwrap().unwrap();
    assert!(challenge["codeHash"].as_str().is_some_and(|h| h.len() == 64), "{challenge}");
    let (status, body) = verify_code(&api, support::ADMIN_EMAIL, "000000").await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "invalidCode"), "{body}");
    let (status, body) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!((status, code(&body)), (StatusCode::TOO_MANY_REQUESTS, "codeAlreadySent"), "{body}");
    // Passwords still work.
    api.admin().await;

    // The delivery itself reports the failure, naming the server and not the code.
    let error = delivery.deliver(support::ADMIN_EMAIL, "314159", Duration::from_secs(600)).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("314159"), "{message}");
}

#[tokio::test]
async fn a_refused_recipient_is_a_delivery_error() {
    let smtp = FakeSmtp::refusing_recipients().await;
    let (settings, delivery) = smtp_settings(&smtp.url());
    let api = Api::sqlite_with(settings).await;
    let (status, body) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!((status, &body), (StatusCode::ACCEPTED, &body_of_request()));

    let error = delivery.deliver("ann@example.org", "271828", Duration::from_secs(600)).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("550") && message.contains(&smtp.addr.to_string()), "{message}");
    assert!(!message.contains("271828"), "{message}");
    assert!(smtp.settled().await.is_empty());
}
