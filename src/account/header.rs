//! The header `From:` check made after DATA: every author address must be in one of the
//! account's sender domains, as the envelope sender was at MAIL FROM. A sending service
//! signs with its customers' domains, so it must not relay mail whose visible author is a
//! domain the customer does not own.
//!
//! Only the header block is looked at. When it lies within the first body chunk (the usual
//! case) it is parsed in place; otherwise the header bytes alone are gathered.

use std::borrow::Cow;

use bytes::Bytes;
use mail_parser::MessageParser;

use super::Account;
use crate::message::domain_of;
use crate::smtp::reply::{Enhanced, Reply};

/// Headers larger than this are not searched for the end of the header block.
const HEADER_BLOCK_MAX_BYTES: usize = 1 << 20;

/// Checks the header `From:` of a message against `account`'s sender domains.
pub fn check_header_from(account: &Account, body: &[Bytes]) -> Result<(), Reply> {
    let headers = header_block(body);
    let Some(parsed) = MessageParser::new().parse_headers(headers.as_ref()) else {
        return Err(no_from());
    };
    let Some(from) = parsed.from() else {
        return Err(no_from());
    };
    let mut seen = false;
    for addr in from.iter() {
        let Some(address) = addr.address() else { continue };
        seen = true;
        let domain = domain_of(address);
        if domain.is_empty() || !account.sender_domains.allows(domain) {
            return Err(Reply::new(
                550,
                Enhanced::new(5, 7, 1),
                format!(
                    "Header From domain {domain} is not allowed for account {}",
                    account.id
                ),
            ));
        }
    }
    if seen { Ok(()) } else { Err(no_from()) }
}

fn no_from() -> Reply {
    Reply::new(550, Enhanced::new(5, 6, 0), "Message has no valid From: header")
}

/// The bytes of the header block (up to and including the blank line), borrowed from the
/// first chunk when it holds it all.
fn header_block(body: &[Bytes]) -> Cow<'_, [u8]> {
    if let Some(first) = body.first()
        && let Some(end) = find_blank_line(first)
    {
        return Cow::Borrowed(&first[..end]);
    }
    let mut gathered = Vec::new();
    for chunk in body {
        let room = HEADER_BLOCK_MAX_BYTES.saturating_sub(gathered.len());
        gathered.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if let Some(end) = find_blank_line(&gathered) {
            gathered.truncate(end);
            break;
        }
        if room <= chunk.len() {
            break;
        }
    }
    Cow::Owned(gathered)
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    if bytes.starts_with(b"\r\n") {
        return Some(2);
    }
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SenderDomains;

    fn account(domains: &[&str]) -> Account {
        Account {
            id: "acct".into(),
            networks: vec![],
            sender_domains: SenderDomains::List(domains.iter().map(|d| d.to_string()).collect()),
            owner: 0,
            credentials: vec![],
            share: Default::default(),
        }
    }

    fn chunks(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    #[test]
    fn allows_own_domain_in_any_chunking() {
        let a = account(&["shop.example"]);
        let msg = "Subject: hi\r\nFrom: \"Shop\" <news@Shop.Example>\r\nTo: x@y.example\r\n\r\nbody\r\n";
        assert_eq!(check_header_from(&a, &chunks(&[msg])), Ok(()));
        for split in 1..msg.len() {
            let parts = [&msg[..split], &msg[split..]];
            assert_eq!(check_header_from(&a, &chunks(&parts)), Ok(()), "split at {split}");
        }
    }

    #[test]
    fn refuses_foreign_or_missing_from() {
        let a = account(&["shop.example"]);
        let e = check_header_from(&a, &chunks(&["From: a@bank.example\r\n\r\nx\r\n"])).unwrap_err();
        assert_eq!(e.code, 550);
        assert!(e.text.contains("bank.example"));
        let two = "From: a@shop.example, b@bank.example\r\n\r\nx\r\n";
        assert!(check_header_from(&a, &chunks(&[two])).is_err());
        let e = check_header_from(&a, &chunks(&["Subject: none\r\n\r\nx\r\n"])).unwrap_err();
        assert_eq!(e.enhanced, Some(Enhanced::new(5, 6, 0)));
        assert!(check_header_from(&a, &chunks(&["From: nobody\r\n\r\n"])).is_err());
    }

    #[test]
    fn any_domain_account_still_needs_a_from() {
        let a = Account {
            sender_domains: SenderDomains::Any,
            ..account(&[])
        };
        assert!(check_header_from(&a, &chunks(&["From: x@anything.example\r\n\r\n"])).is_ok());
        assert!(check_header_from(&a, &chunks(&["\r\nbody only\r\n"])).is_err());
    }
}
