//! Buffered connection I/O for one SMTP session: an input buffer the codec reads from, an output
//! buffer of replies written in one go (pipelining), idle timeouts, and the STARTTLS switch.
//!
//! Owns: when bytes move. Must not know: SMTP grammar, replies, policy.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Conn;

/// Bytes asked from the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Output is written early once this much is pending (a client that pipelines without reading).
const OUT_HIGH_WATER: usize = 64 * 1024;

/// Why the connection cannot go on.
#[derive(Debug)]
pub enum IoError {
    /// The peer closed the connection.
    Eof,
    /// Nothing arrived (or nothing could be written) within the idle timeout.
    Timeout,
    Io(io::Error),
}

pub struct Io {
    conn: Option<Conn>,
    inbuf: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    idle: Duration,
}

impl Io {
    pub fn new(conn: Conn, idle: Duration) -> Io {
        Io {
            conn: Some(conn),
            inbuf: Vec::with_capacity(4096),
            pos: 0,
            out: Vec::with_capacity(1024),
            idle,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.conn.as_ref().is_some_and(Conn::is_tls)
    }

    /// Unconsumed input.
    pub fn buffered(&self) -> &[u8] {
        &self.inbuf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.inbuf.len());
        if self.pos == self.inbuf.len() {
            self.inbuf.clear();
            self.pos = 0;
        }
    }

    /// Drop all unconsumed input (plaintext pipelined after STARTTLS must not be executed).
    pub fn discard_input(&mut self) {
        self.inbuf.clear();
        self.pos = 0;
    }

    /// Queue one reply line (CRLF is added).
    pub fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Queue pre-formatted reply bytes (already CRLF-terminated).
    pub fn reply_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Whether queued output should be written before doing more work.
    pub fn out_full(&self) -> bool {
        self.out.len() >= OUT_HIGH_WATER
    }

    /// Write all queued replies.
    pub async fn flush(&mut self) -> Result<(), IoError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let conn = self.conn.as_mut().ok_or(IoError::Eof)?;
        let write = async {
            conn.write_all(&self.out).await?;
            conn.flush().await
        };
        match tokio::time::timeout(self.idle, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(IoError::Io(e)),
            Err(_) => Err(IoError::Timeout),
        }
    }

    /// Flush pending replies, then wait for more input (the idle timeout applies).
    pub async fn fill(&mut self) -> Result<(), IoError> {
        self.flush().await?;
        if self.pos > 0 {
            self.inbuf.drain(..self.pos);
            self.pos = 0;
        }
        self.inbuf.reserve(READ_CHUNK);
        let conn = self.conn.as_mut().ok_or(IoError::Eof)?;
        // Reads at most the spare capacity, so the buffer stays bounded.
        let read = conn.read_buf(&mut self.inbuf);
        match tokio::time::timeout(self.idle, read).await {
            Ok(Ok(0)) => Err(IoError::Eof),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(IoError::Io(e)),
            Err(_) => Err(IoError::Timeout),
        }
    }

    /// Flush, drop buffered input, and run the TLS handshake on the connection.
    pub async fn starttls(&mut self, cfg: Arc<rustls::ServerConfig>) -> Result<(), IoError> {
        self.flush().await?;
        self.discard_input();
        let conn = self.conn.take().ok_or(IoError::Eof)?;
        let tls = conn.starttls(cfg).await.map_err(IoError::Io)?;
        self.conn = Some(tls);
        Ok(())
    }

    /// Flush what is pending and close the write side (best effort, bounded).
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        if let Some(conn) = self.conn.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.shutdown()).await;
        }
    }
}
