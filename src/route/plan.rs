//! Where one recipient's mail goes: the configured smarthost, or the recipient domain's MX
//! hosts in RFC 5321 §5.1 order. Egress pools and per-domain routes will extend
//! [`Route`]; the delivery engine only asks for the hops of a route.

use super::resolver::{DnsError, Resolver};
use crate::config::DeliveryConfig;

/// A delivery route: every recipient with the same route goes in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Everything to one relay host.
    Smarthost { host: String, port: u16 },
    /// The recipient domain's MX hosts (lower-case domain).
    Mx { domain: String },
}

impl Route {
    /// The route for a recipient in `domain`.
    pub fn for_domain(config: &DeliveryConfig, domain: &str) -> Route {
        match &config.smarthost {
            Some((host, port)) => Route::Smarthost {
                host: host.clone(),
                port: *port,
            },
            None => Route::Mx {
                domain: domain.to_ascii_lowercase(),
            },
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
