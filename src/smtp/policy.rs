//! End-of-DATA policy hook: the single place where a complete message and its envelope are
//! judged before it is stored. Submission runs `policy::check_submission` (sender rules,
//! encryption, header cleanup); port 25 runs the inbound decision shared with `/mxdeliv`
//! (`delivery::inbound::check`: encryption / mailer-daemon rules, strict DKIM or IP-literal
//! origin).
//!
//! Owns: choosing the rule set for the service. Must not know: sockets, the SMTP state
//! machine, storage.

use std::net::IpAddr;
use std::sync::Arc;

use crate::net::Service;
use crate::policy::{self, Accepted};
use crate::replies::smtp as r;
use crate::Ctx;

/// The envelope of a message at end of DATA.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub service: Service,
    /// `MAIL FROM` address; empty for the null sender `<>` (port 25 only).
    pub sender: &'a str,
    /// The authenticated address (submission only).
    pub login: Option<&'a str>,
    /// Accepted local recipients, canonical.
    pub rcpts: &'a [String],
    /// Accepted recipients in other domains (submission only).
    pub remote: &'a [String],
    /// The client's address, for the origin check of address-literal senders (§7 step 6).
    /// Never store or log it.
    pub peer_ip: Option<IpAddr>,
}

/// What happens to the message.
#[derive(Debug)]
pub enum Verdict {
    /// Store the accepted (cleaned) message.
    Accept(Accepted),
    /// Reply with this line and store nothing.
    Reject(String),
}

/// Judge a message.
pub async fn check(ctx: &Arc<Ctx>, env: &Envelope<'_>, message: &[u8]) -> Verdict {
    if env.service == Service::Mx {
        return match crate::delivery::inbound::check(
            ctx,
            env.sender,
            env.rcpts,
            message,
            env.peer_ip,
        )
        .await
        {
            Ok(a) => Verdict::Accept(a),
            Err(line) => Verdict::Reject(line),
        };
    }
    let all: Vec<String> = env.rcpts.iter().chain(env.remote).cloned().collect();
    let (c, sender, msg) = (ctx.clone(), env.sender.to_string(), message.to_vec());
    let verdict = tokio::task::spawn_blocking(move || {
        let env = policy::Envelope {
            sender: &sender,
            rcpts: &all,
        };
        c.policy.check_submission(&env, &msg)
    })
    .await;
    match verdict {
        Ok(policy::Verdict::Accept(a)) => Verdict::Accept(a),
        Ok(policy::Verdict::Reject(reply)) => Verdict::Reject(reply.line().to_string()),
        Err(_) => Verdict::Reject(r::LOCAL_ERROR.to_string()),
    }
}
