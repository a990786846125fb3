//! Per-account tracking options: what to track and where the tracking endpoint lives.
//!
//! Plain data, validated once when the configuration is loaded; the rewrite reads it and
//! never changes it, so one snapshot serves every core.

use std::time::Duration;

/// The attribute that, present on an `<a>` or `<area>`, keeps its link untracked.
pub const DEFAULT_EXCLUDE_ATTRIBUTE: &str = "data-notrack";

/// The tracking base URL of the embedded default configuration (the endpoint on loopback).
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8025";

/// What the rewrite adds to one account's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingOptions {
    /// Add a 1×1 pixel to the HTML body (open tracking).
    pub opens: bool,
    /// Rewrite `href`s of `<a>` and `<area>` in HTML parts (click tracking).
    pub clicks: bool,
    /// Also rewrite bare `http(s)://` URLs in `text/plain` parts. Off by default: many
    /// senders do not want their plain-text alternative touched.
    pub plain_text_clicks: bool,
    /// Where the tracking endpoint is reached, e.g. `https://t.example.com` (no trailing
    /// slash needed; one is tolerated).
    pub base_url: String,
    /// Links to these domains, or their subdomains, are left alone (lowercase, no dot
    /// prefix: `example.com` also excludes `www.example.com`).
    pub exclude_domains: Vec<String>,
    /// An element carrying this attribute keeps its link untracked.
    pub exclude_attribute: String,
    /// How long tokens stay valid after the message was accepted; `None` = forever.
    pub expiry: Option<Duration>,
    /// Tokens name the recipient, so a message is rewritten once per recipient. When
    /// false, tokens carry an empty recipient and one rewrite serves every recipient.
    pub per_recipient: bool,
}

impl Default for TrackingOptions {
    fn default() -> Self {
        TrackingOptions {
            opens: true,
            clicks: true,
            plain_text_clicks: false,
            base_url: DEFAULT_BASE_URL.to_string(),
            exclude_domains: Vec::new(),
            exclude_attribute: DEFAULT_EXCLUDE_ATTRIBUTE.to_string(),
            expiry: None,
            per_recipient: true,
        }
    }
}

impl TrackingOptions {
    /// Checks what the rewrite relies on; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let base = &self.base_url;
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(format!("base_url `{base}` must start with http:// or https://"));
        }
        // The base URL is written verbatim into HTML attributes and headers; refusing
        // these bytes keeps that safe without escaping rules at every use.
        if base
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || b"\"'<>&\\".contains(&b))
        {
            return Err(format!(
                "base_url `{base}` has a character that is not allowed in it"
            ));
        }
        if self.exclude_attribute.is_empty()
            || !self
                .exclude_attribute
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "exclude_attribute `{}` is not an attribute name",
                self.exclude_attribute
            ));
        }
        if let Some(d) = self
            .exclude_domains
            .iter()
            .find(|d| d.is_empty() || d.starts_with('.'))
        {
            return Err(format!(
                "exclude_domains entry `{d}` must be a domain like example.com"
            ));
        }
        Ok(())
    }

    /// The base URL without its trailing slashes.
    pub fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    /// Whether the rewrite has anything to do for this account.
    pub fn is_active(&self) -> bool {
        self.opens || self.clicks || self.plain_text_clicks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_tracks_html_only() {
        let o = TrackingOptions::default();
        assert_eq!(o.validate(), Ok(()));
        assert!(o.opens && o.clicks && !o.plain_text_clicks && o.per_recipient);
        assert_eq!(o.exclude_attribute, "data-notrack");
    }

    #[test]
    fn validate_rejects_unsafe_base_urls_and_bad_names() {
        let with = |base: &str| TrackingOptions {
            base_url: base.to_string(),
            ..TrackingOptions::default()
        };
        assert!(with("ftp://t.example").validate().is_err());
        assert!(with("https://t.example/?a=1&b=2").validate().is_err());
        assert!(with("https://t.example/\"x").validate().is_err());
        assert_eq!(with("HTTPS://t.example/").validate(), Ok(()));
        assert_eq!(with("https://t.example/").base(), "https://t.example");
        let bad_attr = TrackingOptions {
            exclude_attribute: "a b".into(),
            ..TrackingOptions::default()
        };
        assert!(bad_attr.validate().is_err());
        let bad_domain = TrackingOptions {
            exclude_domains: vec![".example.com".into()],
            ..TrackingOptions::default()
        };
        assert!(bad_domain.validate().is_err());
    }
}
