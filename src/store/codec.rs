//! Binary encoding of the values kept in sled. Private to `store`: nothing else may know it.
//!
//! Hand-written instead of a serde format crate because the records are a few fixed-width
//! integers; a version byte leads every record so the layout can evolve.

use super::{Flags, MsgInfo, StoreError};

const V1: u8 = 1;

/// Per-mailbox state: UIDVALIDITY, next UID, highest MODSEQ, and the internal id that prefixes the
/// mailbox's message keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MailboxRec {
    pub id: u64,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
}

impl MailboxRec {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(25);
        v.push(V1);
        v.extend_from_slice(&self.id.to_be_bytes());
        v.extend_from_slice(&self.uidvalidity.to_be_bytes());
        v.extend_from_slice(&self.uidnext.to_be_bytes());
        v.extend_from_slice(&self.highestmodseq.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        if b.len() != 25 || b[0] != V1 {
            return Err(StoreError::Corrupt("mailbox record"));
        }
        Ok(MailboxRec {
            id: be64(&b[1..9]),
            uidvalidity: be32(&b[9..13]),
            uidnext: be32(&b[13..17]),
            highestmodseq: be64(&b[17..25]),
        })
    }
}

/// Per-message index record. The body lives in the blob file `blob`.
pub(super) fn encode_msg(m: &MsgInfo) -> Vec<u8> {
    let mut v = Vec::with_capacity(34);
    v.push(V1);
    v.extend_from_slice(&m.blob.to_be_bytes());
    v.push(m.flags.bits());
    v.extend_from_slice(&m.modseq.to_be_bytes());
    v.extend_from_slice(&m.size.to_be_bytes());
    v.extend_from_slice(&m.internal_date.to_be_bytes());
    v
}

pub(super) fn decode_msg(uid: u32, b: &[u8]) -> Result<MsgInfo, StoreError> {
    if b.len() != 34 || b[0] != V1 {
        return Err(StoreError::Corrupt("message record"));
    }
    Ok(MsgInfo {
        uid,
        blob: be64(&b[1..9]),
        flags: Flags::from_bits(b[9]),
        modseq: be64(&b[10..18]),
        size: be64(&b[18..26]),
        internal_date: be64(&b[26..34]) as i64,
    })
}

pub(super) fn msg_key(mailbox_id: u64, uid: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&mailbox_id.to_be_bytes());
    k[8..].copy_from_slice(&uid.to_be_bytes());
    k
}

pub(super) fn uid_of_key(k: &[u8]) -> u32 {
    be32(&k[8..12])
}

/// Key of a mailbox record: `addr NUL name`. Addresses never contain NUL.
pub(super) fn mailbox_key(addr: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(addr.len() + name.len() + 1);
    k.extend_from_slice(addr.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn user_prefix(addr: &str) -> Vec<u8> {
    let mut k = addr.as_bytes().to_vec();
    k.push(0);
    k
}

pub(super) fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub(super) fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_records() {
        let m = MailboxRec {
            id: 7,
            uidvalidity: 99,
            uidnext: 12,
            highestmodseq: 1 << 40,
        };
        assert_eq!(MailboxRec::decode(&m.encode()).unwrap(), m);
        let msg = MsgInfo {
            uid: 5,
            blob: 3,
            flags: Flags::SEEN,
            modseq: 8,
            size: 1234,
            internal_date: 1_700_000_000,
        };
        assert_eq!(decode_msg(5, &encode_msg(&msg)).unwrap(), msg);
        assert!(decode_msg(5, &[2, 0]).is_err());
        assert!(MailboxRec::decode(&[1; 3]).is_err());
    }
}
