//! Where one recipient's mail goes: a smarthost, or the recipient domain's MX hosts in
//! RFC 5321 §5.1 order ([`super::egress`] decides which); the hosts to try for it; and the
//! *site* those hosts make, the name under which delivery shares connection and rate
//! limits: domains with the same MX set are one site (as KumoMTA's `site_name`).

use super::resolver::{DnsError, Resolver};

/// A delivery target: every recipient with the same target goes in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// Everything to one relay host.
    Smarthost { host: String, port: u16 },
    /// The recipient domain's MX hosts (lower-case domain).
    Mx { domain: String },
}

impl Route {
    /// For reasons and logs: `smarthost host:port`, or the domain.
    pub fn describe(&self) -> String {
        match self {
            Route::Smarthost { host, port } => format!("smarthost {host}:{port}"),
            Route::Mx { domain } => domain.clone(),
        }
    }
}

/// One host to try, by name, with the port to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub host: String,
    pub port: u16,
}

/// The hosts to try for a route, in order.
pub async fn hops(resolver: &Resolver, route: &Route, mx_port: u16) -> Result<Vec<Hop>, DnsError> {
    match route {
        Route::Smarthost { host, port } => Ok(vec![Hop {
            host: host.clone(),
            port: *port,
        }]),
        Route::Mx { domain } => {
            let hosts = resolver.mx(domain).await?;
            Ok(hosts
                .into_iter()
                .map(|h| Hop {
                    host: h.name,
                    port: mx_port,
                })
                .collect())
        }
    }
}

/// The site of a route's hops: the sorted set of `host:port`, so `gmail.com` and
/// `googlemail.com`, served by the same MX hosts, share one site and one set of limits.
pub fn site(hops: &[Hop]) -> String {
    let mut names: Vec<String> = hops.iter().map(|h| format!("{}:{}", h.host, h.port)).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(host: &str) -> Hop {
        Hop {
            host: host.into(),
            port: 25,
        }
    }

    #[test]
    fn the_same_mx_set_in_any_order_is_one_site() {
        let a = site(&[hop("mx2.example"), hop("mx1.example")]);
        let b = site(&[hop("mx1.example"), hop("mx2.example"), hop("mx1.example")]);
        assert_eq!(a, b);
        assert_eq!(a, "mx1.example:25,mx2.example:25");
        assert_ne!(a, site(&[hop("mx1.example")]));
    }
}
