//! The `[egress]` section: names become indexes, defaults are inherited, mistakes name
//! their key, and the README's routing example is valid.

use super::*;
use crate::config::Config;

const ROUTING: &str = r#"
[egress]
default_pool = "shared"
classes = { certified = "warm" }

[[egress.sources]]
name = "a"
bind = "127.0.0.2"
ehlo = "a.example"

[[egress.sources]]
name = "b"
bind = "127.0.0.3"

[[egress.pools]]
name = "shared"
sources = { a = 1, b = 3 }

[[egress.pools]]
name = "warm"
sources = { b = 1 }

[[egress.routes]]
domains = ["gmail.com", ".GoogleMail.com."]
pool = "warm"
connections_max_count = 4
connect_timeout_ms = 5000

[[egress.routes]]
domains = ["partner.example"]
smarthost = "127.0.0.1:2600"
auth_user = "u"
auth_password = "p"
tls = "required"
tls_verify = false
"#;

#[test]
fn names_become_indexes_and_routes_inherit_defaults() {
    let c = Config::from_toml(ROUTING).unwrap().egress;
    let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["default", "a", "b"]);
    assert_eq!(c.sources[1].bind, Some("127.0.0.2".parse().unwrap()));
    assert_eq!(c.sources[2].ehlo, "corerelay.localhost");
    assert_eq!(c.pools[c.default_pool].name, "shared");
    assert_eq!(c.pools[c.default_pool].members, vec![(1, 1), (2, 3)]);
    assert_eq!(c.classes["certified"], c.pool_index("warm").unwrap());
    let gmail = &c.routes[0];
    assert_eq!(
        gmail.domains,
        vec![
            DomainMatch::Exact("gmail.com".into()),
            DomainMatch::Suffix("googlemail.com".into())
        ]
    );
    assert_eq!(gmail.shaping.connections_max_count, 4);
    assert_eq!(gmail.shaping.messages_per_connection_max_count, 100);
    assert_eq!(gmail.timeouts.connect, Some(Duration::from_secs(5)));
    assert_eq!(gmail.timeouts.data, None);
    assert_eq!(gmail.tls, c.tls);
    let partner = &c.routes[1];
    let smarthost = partner.smarthost.as_ref().unwrap();
    assert_eq!((smarthost.host.as_str(), smarthost.port), ("127.0.0.1", 2600));
    assert_eq!(smarthost.auth.as_ref().unwrap().user, "u");
    assert_eq!(
        partner.tls,
        TlsSettings {
            policy: TlsPolicy::Required,
            verify: false
        }
    );
}

/// The routing example in README.md is a valid configuration.
#[test]
fn the_readme_example_is_valid() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Delivery: egress routing").expect("the section")..];
    let start = section.find("```toml\n").expect("a toml block") + 8;
    let end = start + section[start..].find("```").expect("its end");
    let c = Config::from_toml(&section[start..end]).unwrap();
    assert_eq!(
        c.egress.pools[c.egress.default_pool].members,
        vec![(1, 3), (2, 1)]
    );
    assert_eq!(c.accounts[0].class.as_deref(), Some("certified"));
}

#[test]
fn mistakes_name_their_key() {
    let bad = |toml: &str, key: &str| {
        let e = Config::from_toml(toml).unwrap_err();
        assert_eq!(e.key, key, "{e}");
    };
    bad("[egress]\ndefault_pool = \"nope\"\n", "egress.default_pool");
    bad(
        "[[egress.pools]]\nname = \"p\"\nsources = { x = 1 }\n",
        "egress.pools[0].sources",
    );
    bad(
        "[[egress.sources]]\nname = \"s\"\nbind = \"host\"\n",
        "egress.sources[0].bind",
    );
    bad(
        "[[egress.routes]]\ndomains = [\"a..b\"]\n",
        "egress.routes[0].domains",
    );
    bad(
        "[[egress.routes]]\ndomains = [\"a.b\"]\ntls = \"maybe\"\n",
        "egress.routes[0].tls",
    );
    bad(
        "[[egress.routes]]\ndomains = [\"a.b\"]\ndata_timeout_ms = 0\n",
        "egress.routes[0].data_timeout_ms",
    );
    bad(
        "[[egress.routes]]\ndomains = [\"a.b\"]\nsmarthost = \"h:25\"\nauth_user = \"u\"\nauth_password = \"p\"\n",
        "egress.routes[0].tls",
    );
    bad(
        "[egress.classes]\ncertified = \"none\"\n",
        "egress.classes.certified",
    );
    let account = "[[accounts]]\nid = \"a\"\nnetworks = [\"10.0.0.1\"]\nsender_domains = [\"*\"]\n";
    bad(&format!("{account}class = \"gold\"\n"), "accounts[0].class");
    bad(&format!("{account}pool = \"gold\"\n"), "accounts[0].pool");
}
