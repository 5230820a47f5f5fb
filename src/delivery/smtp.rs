//! SMTP client for port 25 (relay-behaviour §9.3 step 2): EHLO with the mail domain,
//! STARTTLS required (except `nauta.cu`) with a verified certificate (except `_` domains and
//! address literals), then MAIL / RCPT per recipient / DATA. Per-recipient results.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{tlsconf, Delivery, Failure, Target};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const DATA_TIMEOUT: Duration = Duration::from_secs(600);

pub enum Outcome {
    /// The transaction ran: one result per recipient.
    Done(Vec<Result<(), Failure>>),
    /// The server rejected the whole message (MAIL, DATA or all RCPTs): no further MX.
    Rejected(Failure),
    /// Connection, TLS or protocol trouble: try the next address / MX.
    Connect(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Client {
    r: BufReader<Box<dyn Stream>>,
}

impl Client {
    /// One (possibly multi-line) reply: (code, lines joined by a space).
    async fn reply(&mut self, t: Duration) -> Result<(u16, String), String> {
        let mut text = String::new();
        loop {
            let mut l = String::new();
            let n = tokio::time::timeout(t, self.r.read_line(&mut l))
                .await
                .map_err(|_| "timeout waiting for a reply".to_string())?
                .map_err(|e| format!("read error: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            if l.len() > 1000 || text.len() > 16_384 {
                return Err("reply too long".into());
            }
            let l = l.trim_end_matches(['\r', '\n']);
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("bad reply line {:?}", super::redact(l)))?;
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
    }

    async fn send(&mut self, data: &[u8]) -> Result<(), String> {
        let s = self.r.get_mut();
        tokio::time::timeout(COMMAND_TIMEOUT, async {
            s.write_all(data).await?;
            s.flush().await
        })
        .await
        .map_err(|_| "timeout while sending".to_string())?
        .map_err(|e| format!("write error: {e}"))
    }

    async fn cmd(&mut self, line: &str) -> Result<(u16, String), String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply(COMMAND_TIMEOUT).await
    }
}

/// Dot-stuff `body` and terminate it; bare LF line ends become CRLF.
pub fn data_payload(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 50 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

pub async fn send(
    d: &Delivery,
    t: &Target,
    ip: IpAddr,
    sender: &str,
    rcpts: &[String],
    body: &[u8],
) -> Outcome {
    let sa = SocketAddr::new(ip, d.smtp_port);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(sa)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::Connect(format!("connect: {e}")),
        Err(_) => return Outcome::Connect("connect: timed out".into()),
    };
    let _ = tcp.set_nodelay(true);
    let mut c = Client {
        r: BufReader::new(Box::new(tcp)),
    };
    match transaction(d, t, &mut c, sender, rcpts, body).await {
        Ok(o) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.cmd("QUIT")).await;
            o
        }
        Err(e) => Outcome::Connect(e),
    }
}

async fn transaction(
    d: &Delivery,
    t: &Target,
    c: &mut Client,
    sender: &str,
    rcpts: &[String],
    body: &[u8],
) -> Result<Outcome, String> {
    let host = &t.host;
    let (code, text) = c.reply(COMMAND_TIMEOUT).await?;
    if code != 220 {
        return Ok(Outcome::Rejected(Failure::from_reply(&format!(
            "{text} (while attempting delivery to {host})"
        ))));
    }
    let (code, ehlo) = c.cmd(&format!("EHLO {}", d.ehlo)).await?;
    if code != 250 {
        return Err(format!("EHLO refused: {}", super::redact(&ehlo)));
    }
    let starttls = ehlo.split(' ').any(|w| {
        w.eq_ignore_ascii_case("STARTTLS") || w.to_ascii_uppercase().ends_with("-STARTTLS")
    });
    if starttls {
        let (code, text) = c.cmd("STARTTLS").await?;
        if code != 220 {
            return Err(format!("STARTTLS refused: {}", super::redact(&text)));
        }
        if !c.r.buffer().is_empty() {
            return Err("data after STARTTLS reply".into());
        }
        let cfg = if t.verify {
            d.tls.smtp_verified.clone()
        } else {
            d.tls.smtp_unverified.clone()
        };
        let name = tlsconf::server_name(host).map_err(|e| e.to_string())?;
        let placeholder: Box<dyn Stream> = Box::new(tokio::io::duplex(1).0);
        let inner = std::mem::replace(&mut c.r, BufReader::new(placeholder)).into_inner();
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(cfg).connect(name, inner),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
        c.r = BufReader::new(Box::new(tls));
        let (code, ehlo) = c.cmd(&format!("EHLO {}", d.ehlo)).await?;
        if code != 250 {
            return Err(format!(
                "EHLO after STARTTLS refused: {}",
                super::redact(&ehlo)
            ));
        }
    } else if t.require_tls {
        return Err(format!("{host} does not offer STARTTLS"));
    }
    let (code, text) = c.cmd(&format!("MAIL FROM:<{sender}>")).await?;
    if code != 250 {
        return Ok(Outcome::Rejected(Failure::from_reply(&format!(
            "{text} (while attempting delivery to {host})"
        ))));
    }
    let mut per: Vec<Result<(), Failure>> = Vec::with_capacity(rcpts.len());
    for r in rcpts {
        let (code, text) = c.cmd(&format!("RCPT TO:<{r}>")).await?;
        per.push(if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(Failure::from_reply(&text))
        });
    }
    if per.iter().all(|r| r.is_err()) {
        let _ = c.cmd("RSET").await;
        return Ok(Outcome::Done(per));
    }
    let (code, text) = c.cmd("DATA").await?;
    if code != 354 {
        return Ok(Outcome::Rejected(Failure::from_reply(&text)));
    }
    c.send(&data_payload(body)).await?;
    let (code, text) = c.reply(DATA_TIMEOUT).await?;
    if !(200..300).contains(&code) {
        return Ok(Outcome::Rejected(Failure::from_reply(&text)));
    }
    Ok(Outcome::Done(per))
}

#[cfg(test)]
mod tests {
    use super::data_payload;

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            data_payload(b"a\r\n.\r\n..b\r\n"),
            b"a\r\n..\r\n...b\r\n.\r\n"
        );
        assert_eq!(data_payload(b".x"), b"..x\r\n.\r\n");
        assert_eq!(data_payload(b"a\nb"), b"a\r\nb\r\n.\r\n");
    }
}
