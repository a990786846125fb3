//! The stage between the spool and the wire: the account's open/click tracking rewrite and
//! its DKIM signatures, applied to a job's bytes just before they are sent.
//!
//! The spool keeps the message exactly as received; what goes out is a deterministic
//! function of that record and the account's options (tokens carry the accept time), so a
//! retry or a restart rewrites it identically. Only DKIM's `t=` is the signing time.
//! Bytes that do not change are never copied: the output is the received `Bytes` slices
//! plus the rewritten parts and the new header fields.
//!
//! When tokens name the recipient (`per_recipient`, the default), the router gives every
//! recipient its own job, and each is rewritten and signed for that recipient.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{AccountConfig, AccountTracking};
use crate::dkim::{PrivateKey, Signer, header_from_domain};
use crate::message::Envelope;
use crate::observe::metrics::CoreMetrics;
use crate::rewrite::{Keyring, RewriteContext, one_click_unsubscribe_headers, rewrite};

/// What one account's messages go through.
pub struct AccountTransform {
    pub tracking: Option<AccountTracking>,
    /// Signers by signing domain (several for one domain: dual RSA + Ed25519 signatures).
    pub signers: Vec<Signer>,
}

/// Every account's transform and the tracking keyring: built once from the configuration
/// (reading key files), shared read-only by every core, swapped whole by a reload.
#[derive(Default)]
pub struct Transform {
    keyring: Option<Arc<Keyring>>,
    accounts: HashMap<String, AccountTransform>,
}

impl Transform {
    /// Loads the accounts' DKIM keys; an unreadable or invalid key names the account and file.
    pub fn new(accounts: &[AccountConfig], keyring: Arc<Keyring>) -> Result<Transform, String> {
        let mut out = HashMap::new();
        for a in accounts {
            let mut signers = Vec::with_capacity(a.dkim.len());
            for k in &a.dkim {
                let pem = std::fs::read(&k.key_file)
                    .map_err(|e| format!("account {}: DKIM key {}: {e}", a.id, k.key_file.display()))?;
                let key = PrivateKey::from_pem(&pem)
                    .map_err(|e| format!("account {}: DKIM key {}: {e}", a.id, k.key_file.display()))?;
                signers.push(match k.headers.is_empty() {
                    true => Signer::with_default_headers(&k.domain, &k.selector, key),
                    false => Signer::new(&k.domain, &k.selector, key, &k.headers),
                });
            }
            if a.tracking.is_some() || !signers.is_empty() {
                out.insert(
                    a.id.clone(),
                    AccountTransform {
                        tracking: a.tracking.clone(),
                        signers,
                    },
                );
            }
        }
        Ok(Transform {
            keyring: Some(keyring),
            accounts: out,
        })
    }

    /// True when an account's messages are rewritten or signed (otherwise they go out as
    /// spooled, and there is nothing to lend).
    pub fn changes(&self, account: &str) -> bool {
        self.accounts.contains_key(account)
    }

    /// True when an account's messages are rewritten once per recipient.
    pub fn per_recipient(&self, account: &str) -> bool {
        self.accounts
            .get(account)
            .and_then(|a| a.tracking.as_ref())
            .is_some_and(|t| t.options.per_recipient)
    }

    /// The bytes to send for `envelope`'s message (`chunks`: trace header, then body) to
    /// `recipient`: rewritten for tracking and signed, as the account asks; the chunks
    /// unchanged for an account with neither.
    pub fn apply(
        &self,
        envelope: &Envelope,
        chunks: &[Bytes],
        recipient: &str,
        metrics: &CoreMetrics,
    ) -> Vec<Bytes> {
        let Some(account) = self.accounts.get(&envelope.account) else {
            return chunks.to_vec();
        };
        let (trace, body) = match chunks.split_first() {
            Some((t, b)) => (t.clone(), b),
            None => return Vec::new(),
        };
        let mut out = Vec::with_capacity(body.len() + 4);
        out.push(trace);
        match (&account.tracking, &self.keyring) {
            (Some(tracking), Some(keyring)) => {
                let rewritten = self.rewrite(envelope, body, recipient, tracking, keyring, metrics);
                out.extend(rewritten);
            }
            _ => out.extend_from_slice(body),
        }
        if account.signers.is_empty() {
            return out;
        }
        // The signing domain is the header From domain, when the account has a key for it.
        let Some(from) = header_from_domain(body) else {
            return out;
        };
        let mut signatures = Vec::new();
        for signer in account.signers.iter().filter(|s| s.domain() == from) {
            match signer.sign(&out) {
                Ok(sig) => {
                    signatures.push(sig);
                    metrics.core.dkim_signatures_total.increment(1);
                }
                Err(_) => metrics.core.dkim_failures_total.increment(1),
            }
        }
        signatures.extend(out);
        signatures
    }

    fn rewrite(
        &self,
        envelope: &Envelope,
        body: &[Bytes],
        recipient: &str,
        tracking: &AccountTracking,
        keyring: &Keyring,
        metrics: &CoreMetrics,
    ) -> Vec<Bytes> {
        let mut ctx = RewriteContext {
            options: &tracking.options,
            keyring,
            account: &envelope.account,
            message_id: envelope.id,
            recipient,
            issued_at_unix_s: envelope.received_at_ms / 1000,
            extra_headers: &[],
        };
        let unsubscribe = match tracking.unsubscribe {
            true => one_click_unsubscribe_headers(&ctx).ok(),
            false => None,
        };
        if let Some(headers) = &unsubscribe {
            ctx.extra_headers = headers;
        }
        let rewritten = rewrite(body, &ctx);
        metrics
            .core
            .tracking_links_total
            .increment(rewritten.links as u64);
        if rewritten.pixel {
            metrics.core.tracking_pixels_total.increment(1);
        }
        if rewritten.untouched_reason.is_some() {
            metrics.core.rewrite_passed_through_total.increment(1);
        }
        rewritten.chunks
    }
}
