//! [`SmtpSink`]: a real SMTP server in-process that keeps every message it accepts. It can
//! refuse the next N messages with a transient `451`, to test retries, and take its time
//! before it accepts a message, as a slow relay does. Started with [`SmtpSink::start_tls`] it
//! is a submission server: it offers STARTTLS with a certificate of its own (for
//! `localhost` and `127.0.0.1`, from a CA it writes to a file) and accepts mail only over
//! TLS after `AUTH PLAIN` or `AUTH LOGIN` with the one user it knows.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// One message as the sink received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Headers and body, as sent.
    pub message: String,
    /// Whether it came over TLS.
    pub tls: bool,
    /// Who had authenticated, if anyone.
    pub user: Option<String>,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    refuse: AtomicU32,
    /// Milliseconds to wait before accepting each message.
    slow: AtomicU64,
    /// Messages whose data has started and that are not accepted yet.
    in_flight: AtomicUsize,
    /// STARTTLS, when offered.
    tls: Option<TlsAcceptor>,
    /// The one user and password, when authentication is required.
    credentials: Option<(String, String)>,
}

pub struct SmtpSink {
    address: std::net::SocketAddr,
    shared: Arc<Shared>,
    /// The CA that signed the sink's certificate, as a PEM file.
    ca_file: Option<PathBuf>,
    stop: CancellationToken,
}

impl SmtpSink {
    /// A plain relay: no TLS, no authentication.
    pub async fn start() -> Self {
        Self::serve(None, None, None).await
    }

    /// A submission server: STARTTLS offered, and mail accepted only over TLS from `user`
    /// with `password`.
    pub async fn start_tls(user: &str, password: &str) -> Self {
        let certificate = crate::tls::LocalhostCertificate::generate();
        let ca_file = certificate.write_ca("shop-smtp-ca");
        let acceptor = certificate.acceptor();
        Self::serve(Some(acceptor), Some((user.to_owned(), password.to_owned())), Some(ca_file)).await
    }

    async fn serve(tls: Option<TlsAcceptor>, credentials: Option<(String, String)>, ca_file: Option<PathBuf>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("cannot bind the SMTP sink");
        let address = listener.local_addr().expect("SMTP sink address");
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            refuse: AtomicU32::new(0),
            slow: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            tls,
            credentials,
        });
        let stop = CancellationToken::new();
        let (accepting, cancel) = (Arc::clone(&shared), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = cancel.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&accepting);
                tokio::spawn(async move {
                    let Some(stream) = session(stream, false, &shared).await else { return };
                    let Some(acceptor) = shared.tls.clone() else { return };
                    if let Ok(secured) = acceptor.accept(stream).await {
                        session(secured, true, &shared).await;
                    }
                });
            }
        });
        Self { address, shared, ca_file, stop }
    }

    /// `smtp://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("smtp://{}", self.address)
    }

    /// Where the sink listens.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The PEM file of the CA that signed the sink's certificate ([`SmtpSink::start_tls`]).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Every message accepted so far (headers and body, as sent).
    pub fn messages(&self) -> Vec<String> {
        self.received().into_iter().map(|received| received.message).collect()
    }

    /// Every message accepted so far, with how it came.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Refuse the next `count` messages with a transient 451.
    pub fn refuse_next(&self, count: u32) {
        self.shared.refuse.store(count, Ordering::SeqCst);
    }

    /// Wait `pause` before accepting each message (a slow relay).
    pub fn slow(&self, pause: Duration) {
        self.shared.slow.store(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Messages being received: their data has started and they are not accepted yet.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(file) = &self.ca_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// `user` and `password` from an `AUTH PLAIN` response (`\0user\0password`, base64).
fn plain_credentials(encoded: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let mut parts = text.split('\0');
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    Some((user.to_owned(), password.to_owned()))
}

fn decode(line: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default()
}

/// One SMTP session on `stream` (`tls`: it is the session after STARTTLS). Returns the
/// stream when the client asked for STARTTLS.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, tls: bool, shared: &Shared) -> Option<S> {
    let mut reader = BufReader::new(stream);
    if !tls {
        reader.get_mut().write_all(b"220 shop-test-sink ESMTP\r\n").await.ok()?;
    }
    let mut user: Option<String> = None;
    let mut data: Option<String> = None;
    let mut buffer = String::new();
    let mut read_line = async |reader: &mut BufReader<S>| -> Option<String> {
        buffer.clear();
        match reader.read_line(&mut buffer).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(buffer.trim_end_matches(['\r', '\n']).to_owned()),
        }
    };
    while let Some(line) = read_line(&mut reader).await {
        if let Some(body) = data.as_mut() {
            if line == "." {
                let pause = shared.slow.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                let received = Received { message: std::mem::take(body), tls, user: user.clone() };
                shared.received.lock().unwrap_or_else(PoisonError::into_inner).push(received);
                data = None;
                reader.get_mut().write_all(b"250 2.0.0 queued\r\n").await.ok()?;
            } else {
                body.push_str(&line);
                body.push('\n');
            }
            continue;
        }
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" | "HELO" => {
                let mut reply = String::from("250-shop-test-sink\r\n");
                if shared.tls.is_some() && !tls {
                    reply.push_str("250-STARTTLS\r\n");
                }
                if shared.credentials.is_some() && tls {
                    reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                reply.push_str("250 8BITMIME\r\n");
                reply
            }
            "STARTTLS" if shared.tls.is_some() && !tls => {
                reader.get_mut().write_all(b"220 2.0.0 ready to start TLS\r\n").await.ok()?;
                return Some(reader.into_inner());
            }
            "AUTH" if shared.credentials.is_some() && !tls => "538 5.7.11 encryption required\r\n".into(),
            "AUTH" => {
                let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                let offered = match (mechanism.as_str(), words.next()) {
                    ("PLAIN", Some(initial)) => plain_credentials(initial),
                    ("PLAIN", None) => {
                        reader.get_mut().write_all(b"334 \r\n").await.ok()?;
                        plain_credentials(&read_line(&mut reader).await?)
                    }
                    ("LOGIN", _) => {
                        reader.get_mut().write_all(b"334 VXNlcm5hbWU6\r\n").await.ok()?;
                        let name = decode(&read_line(&mut reader).await?);
                        reader.get_mut().write_all(b"334 UGFzc3dvcmQ6\r\n").await.ok()?;
                        Some((name, decode(&read_line(&mut reader).await?)))
                    }
                    _ => None,
                };
                if offered.is_some() && offered == shared.credentials {
                    user = offered.map(|(name, _)| name);
                    "235 2.7.0 authenticated\r\n".into()
                } else {
                    "535 5.7.8 authentication credentials invalid\r\n".into()
                }
            }
            "MAIL" if shared.credentials.is_some() && user.is_none() => "530 5.7.0 authentication required\r\n".into(),
            "MAIL" if shared.refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() => {
                "451 4.3.0 try again later\r\n".into()
            }
            "DATA" => {
                shared.in_flight.fetch_add(1, Ordering::SeqCst);
                data = Some(String::new());
                "354 end with .\r\n".into()
            }
            "QUIT" => {
                let _ = reader.get_mut().write_all(b"221 bye\r\n").await;
                return None;
            }
            _ => "250 OK\r\n".into(),
        };
        reader.get_mut().write_all(reply.as_bytes()).await.ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_credentials_are_the_second_and_third_fields() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("\0shop\0s3cret");
        assert_eq!(plain_credentials(&encoded), Some(("shop".into(), "s3cret".into())));
        assert_eq!(plain_credentials("not base64!"), None);
    }
}
