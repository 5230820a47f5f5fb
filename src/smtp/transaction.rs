//! Mail transactions: MAIL FROM, RCPT TO and DATA, with the submission and MX envelope rules
//! (relay-behaviour §5, §7), then the policy hook and durable local delivery.
//!
//! Owns: envelope stages and their replies, the durability rule (reply 250 only after the
//! store returned). Must not know: byte-level grammar (codec), sled keys, message content rules
//! (policy).

use smtp_proto::{MailFrom, RcptTo, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8};

use super::addr::{self, Destination};
use super::codec::{self, DataDecoder, DataEnd, DataResult};
use super::policy::{self, Envelope, Verdict};
use super::session::{Flow, Session, Txn};
use crate::net::Service;
use crate::replies::smtp as r;

/// Recipients per message (Postfix `smtpd_recipient_limit`, METADATA `maxsmtprecipients`).
const MAX_RECIPIENTS: usize = 1000;

impl Session {
    pub(super) async fn mail(&mut self, from: MailFrom<String>) -> Flow {
        if !self.greeted {
            return self.error(r::NEED_HELO);
        }
        if !self.io.is_tls() {
            return self.error(r::MUST_STARTTLS);
        }
        let login = match (self.submission(), &self.login) {
            (true, None) => return self.error(r::AUTH_REQUIRED),
            (_, login) => login.clone(),
        };
        if self.txn.is_some() {
            return self.error(r::NESTED_MAIL);
        }
        // Only what EHLO advertises (BODY, SMTPUTF8, SIZE); AUTH= (RFC 4954) is ignored.
        let supported = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
        if from.flags & !supported != 0
            || from.trans_id.is_some()
            || from.by != 0
            || from.env_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0
        {
            return self.error(r::UNSUPPORTED_PARAMETER);
        }
        if from.size as u64 > self.ctx.cfg.max_message_size {
            self.io.reply(r::SIZE_LIMIT);
            return Flow::Continue;
        }
        let sender = from.address;
        let owned = match &login {
            Some(login) => {
                if !addr::sender_syntax_ok(&sender) {
                    let line = r::invalid_from(&codec::printable(&sender));
                    self.io.reply(&line);
                    return Flow::Continue;
                }
                // A mismatch is reported at RCPT, as Postfix does (spec §5 rule 2).
                addr::owned_by(&sender, login)
            }
            // Port 25: any sender, including the null sender `<>` (bounces).
            None => true,
        };
        self.txn = Some(Txn {
            sender,
            owned,
            rcpts: Vec::new(),
            remote: Vec::new(),
            attempts: 0,
        });
        self.io.reply(r::SENDER_OK);
        Flow::Continue
    }

    pub(super) async fn rcpt(&mut self, to: RcptTo<String>) -> Flow {
        let Some(txn) = self.txn.as_mut() else {
            return self.error(r::NEED_MAIL);
        };
        if txn.attempts >= MAX_RECIPIENTS {
            self.io.reply(r::TOO_MANY_RECIPIENTS);
            return Flow::Continue;
        }
        txn.attempts += 1;
        let owned = txn.owned;
        // DSN is not advertised, so its parameters are not accepted.
        if to.orcpt.is_some() || to.flags != 0 || to.rrvs != 0 {
            return self.error(r::UNSUPPORTED_PARAMETER);
        }
        if !owned {
            self.io.reply(r::SENDER_NOT_OWNED);
            return Flow::Continue;
        }
        let (sender, accepted) = (txn.sender.clone(), txn.rcpts.len() + txn.remote.len());
        if self.submission() {
            // Recipient limit, then the sender's rate limit on the first recipient (§5 rule 3).
            if let Err(reply) = self.ctx.policy.check_rcpt(&sender, accepted) {
                self.io.reply(reply.line());
                return Flow::Continue;
            }
        }
        let domain = self.ctx.cfg.address_domain();
        let local = match addr::destination(&to.address, &domain) {
            Destination::Local(a) => a,
            Destination::Remote if self.service == Service::Mx => {
                self.io.reply(r::RELAY_DENIED);
                return Flow::Continue;
            }
            Destination::Remote => {
                let remote = addr::lower_domain(&to.address);
                if let Some(txn) = self.txn.as_mut() {
                    if !txn.remote.contains(&remote) {
                        txn.remote.push(remote);
                    }
                }
                self.io.reply(r::RCPT_OK);
                return Flow::Continue;
            }
        };
        if self.service == Service::Mx {
            // Existence is not checked on port 25: unknown users bounce after acceptance, so
            // nobody can probe which addresses exist (relay-behaviour §10).
            if let Some(txn) = self.txn.as_mut() {
                if !txn.rcpts.contains(&local) {
                    txn.rcpts.push(local);
                }
            }
            self.io.reply(r::RCPT_OK);
            return Flow::Continue;
        }
        // Submission: unknown local users are refused at once. The sender is authenticated (and
        // any address can be registered by logging in), so this reveals nothing a login would
        // not, and the Delta Chat user sees the failure immediately instead of a bounce.
        let store = self.ctx.store.clone();
        let lookup = local.clone();
        let exists = tokio::task::spawn_blocking(move || store.account(&lookup)).await;
        match exists {
            Ok(Ok(Some(_))) => {
                if let Some(txn) = self.txn.as_mut() {
                    txn.rcpts.push(local);
                }
                self.io.reply(r::RCPT_OK);
            }
            Ok(Ok(None)) => {
                let line = r::user_unknown(&codec::printable(&to.address));
                self.io.reply(&line);
            }
            Ok(Err(e)) => {
                tracing::error!(service = self.service.name(), "account lookup failed: {e}");
                self.io.reply(r::LOCAL_ERROR);
            }
            Err(e) => {
                tracing::error!(service = self.service.name(), "account lookup failed: {e}");
                self.io.reply(r::LOCAL_ERROR);
            }
        }
        Flow::Continue
    }

    pub(super) async fn data(&mut self) -> Flow {
        match &self.txn {
            None => return self.error(r::NEED_MAIL),
            Some(txn) if txn.rcpts.is_empty() && txn.remote.is_empty() => {
                self.io.reply(r::NO_VALID_RECIPIENTS);
                return Flow::Continue;
            }
            Some(_) => {}
        }
        self.io.reply(r::START_DATA);
        let max_size = usize::try_from(self.ctx.cfg.max_message_size).unwrap_or(usize::MAX);
        let mut decoder = DataDecoder::new(max_size, self.ctx.cfg.max_line_length);
        let end = loop {
            let (n, end) = decoder.feed(self.io.buffered());
            self.io.consume(n);
            if let Some(end) = end {
                break end;
            }
            if let Err(e) = self.io.fill().await {
                self.txn = None;
                return self.io_failed(e).await;
            }
        };
        let Some(txn) = self.txn.take() else {
            return self.error(r::NEED_MAIL);
        };
        match (end, decoder.finish()) {
            (DataEnd::Ambiguous, _) => {
                // Where the client thinks the data ended is unknown: never read on.
                self.io.reply(r::BARE_LINE_ENDING);
                Flow::Close("bare CR/LF around end of data")
            }
            (DataEnd::Overflow, _) => {
                self.io.reply(r::MESSAGE_TOO_BIG);
                Flow::Close("message far over the size limit")
            }
            (DataEnd::Complete, DataResult::TooBig) => self.rejected(r::MESSAGE_TOO_BIG, "size"),
            (DataEnd::Complete, DataResult::BareLineEnding) => {
                self.rejected(r::BARE_LINE_ENDING, "bare CR/LF")
            }
            (DataEnd::Complete, DataResult::LineTooLong) => {
                self.rejected(r::DATA_LINE_TOO_LONG, "line length")
            }
            (DataEnd::Complete, DataResult::Message(body)) => self.accept(txn, body).await,
        }
    }

    fn rejected(&mut self, reply: &str, reason: &'static str) -> Flow {
        tracing::info!(service = self.service.name(), reason, "message rejected");
        self.io.reply(reply);
        Flow::Continue
    }

    /// Policy hook, then durable delivery (local INBOXes and the outbound queue); 250 only
    /// once the store has returned.
    async fn accept(&mut self, txn: Txn, body: Vec<u8>) -> Flow {
        let env = Envelope {
            service: self.service,
            sender: &txn.sender,
            login: self.login.as_deref(),
            rcpts: &txn.rcpts,
            remote: &txn.remote,
            peer_ip: self.peer_ip,
        };
        let accepted = match policy::check(&self.ctx, &env, &body).await {
            Verdict::Accept(a) => a,
            Verdict::Reject(reply) => return self.rejected(&reply, "policy"),
        };
        let stored = if self.service == Service::Mx {
            let sender = if accepted.null_sender {
                ""
            } else {
                txn.sender.as_str()
            };
            crate::delivery::inbound::deliver(&self.ctx, sender, &txn.rcpts, accepted, &body).await
        } else {
            self.store_submission(&txn, accepted.message).await
        };
        match stored {
            Ok(()) => {
                self.messages += 1;
                self.io.reply(r::QUEUED);
            }
            Err(line) => self.io.reply(&line),
        }
        Flow::Continue
    }

    /// Store a submitted message: local recipients' INBOXes and one queue item per remote
    /// domain, in one durable transaction.
    async fn store_submission(&self, txn: &Txn, message: Vec<u8>) -> Result<(), String> {
        // Local copies get the delivery cleanup too (relay-behaviour §7 step 8).
        let message = crate::policy::clean_delivery_headers(&message);
        let mut remote: Vec<(String, Vec<String>)> = Vec::new();
        for a in &txn.remote {
            let domain = a
                .rsplit_once('@')
                .map(|(_, d)| d)
                .unwrap_or_default()
                .to_string();
            match remote.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, list)) => list.push(a.clone()),
                None => remote.push((domain, vec![a.clone()])),
            }
        }
        let store = self.ctx.store.clone();
        let (sender, local, size) = (txn.sender.clone(), txn.rcpts.clone(), message.len());
        let res = tokio::task::spawn_blocking(move || {
            let r = store.accept_message(&sender, &local, &remote, &message);
            (r, message)
        })
        .await;
        let (d, queued, message) = match res {
            Ok((Ok((d, q)), message)) => (d, q, message),
            Ok((Err(e), _)) => {
                tracing::error!(service = self.service.name(), "delivery failed: {e}");
                return Err(r::LOCAL_ERROR.to_string());
            }
            Err(e) => {
                tracing::error!(service = self.service.name(), "delivery task failed: {e}");
                return Err(r::LOCAL_ERROR.to_string());
            }
        };
        if !d.missing.is_empty() {
            tracing::warn!(
                service = self.service.name(),
                missing = d.missing.len(),
                "recipients disappeared before delivery"
            );
        }
        if !d.full.is_empty() {
            tracing::warn!(
                service = self.service.name(),
                recipients = d.full.len(),
                "quota exceeded: recipient mailbox full"
            );
        }
        if d.delivered.is_empty() && queued.is_empty() {
            if !d.full.is_empty() {
                return Err(r::QUOTA_EXCEEDED.to_string());
            }
            return Err(r::RECIPIENTS_GONE.to_string());
        }
        if !d.full.is_empty() {
            // Others got it: the full mailboxes are permanent failures, reported by a bounce.
            let failed: Vec<(String, String)> = d
                .full
                .iter()
                .map(|a| (a.clone(), format!("{} <{a}>", r::QUOTA_EXCEEDED)))
                .collect();
            if let Err(e) =
                crate::delivery::send_bounce(&self.ctx, &txn.sender, &failed, &message).await
            {
                tracing::error!(service = self.service.name(), "quota bounce failed: {e}");
            }
        }
        tracing::info!(
            service = self.service.name(),
            recipients = d.delivered.len(),
            queued = queued.len(),
            size,
            "message accepted"
        );
        Ok(())
    }
}
