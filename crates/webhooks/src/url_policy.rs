//! Which URLs webhook deliveries may go to.
//!
//! An endpoint URL is chosen by a tenant, and the API then makes requests to it from inside our
//! network: without a policy a tenant could point deliveries at internal services (server-side
//! request forgery). So private, loopback, link-local, unspecified and multicast addresses, and
//! `localhost`, are refused unless the operator allows them (local development, where the demo
//! receiver runs on 127.0.0.1). Literal addresses are checked here; names are checked again by
//! the worker with [`UrlPolicy::check_addr`] on the addresses they resolve to at delivery time,
//! because a name can resolve to a public address when registered and a private one later
//! (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// The longest endpoint URL accepted (browsers and proxies commonly cap around 2 KiB).
pub const MAX_URL_LEN: usize = 2048;

/// The endpoint URL policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    /// Allow private, loopback, link-local, unspecified and multicast addresses and `localhost`.
    pub allow_private: bool,
}

/// Why an endpoint URL or address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("the URL does not parse: {0}")]
    Invalid(String),
    #[error("the URL's scheme must be http or https, not {0:?}")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL must not carry a user name or password")]
    UserInfo,
    #[error("the URL must not have a fragment (#...)")]
    Fragment,
    #[error("{addr} is a {kind} address; deliveries go to public addresses only unless private ones are allowed")]
    NonPublicAddress { addr: IpAddr, kind: &'static str },
    #[error("{0:?} names this machine; deliveries go to public addresses only unless private ones are allowed")]
    LocalName(String),
}

impl UrlPolicy {
    /// Checks an endpoint URL when it is registered; answers it parsed (normalised).
    pub fn check_url(&self, url: &str) -> Result<Url, UrlError> {
        if url.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let parsed = Url::parse(url).map_err(|e| UrlError::Invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(parsed.scheme().to_owned()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        if parsed.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        // The WHATWG parser has already turned `127.1`, `0x7f.0.0.1` and `[::ffff:7f00:1]`
        // into addresses, so obfuscated literals land in the address branches.
        match parsed.host() {
            None => return Err(UrlError::NoHost),
            Some(Host::Ipv4(v4)) => self.check_addr(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_addr(IpAddr::V6(v6))?,
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return Err(UrlError::NoHost);
                }
                let local = name == "localhost" || name.ends_with(".localhost");
                if local && !self.allow_private {
                    return Err(UrlError::LocalName(name));
                }
            }
        }
        Ok(parsed)
    }

    /// Checks an address a name resolved to, just before connecting.
    pub fn check_addr(&self, addr: IpAddr) -> Result<(), UrlError> {
        if self.allow_private {
            return Ok(());
        }
        match non_public_kind(addr) {
            Some(kind) => Err(UrlError::NonPublicAddress { addr, kind }),
            None => Ok(()),
        }
    }
}

/// What kind of non-public address `addr` is, if it is one.
fn non_public_kind(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(a: Ipv4Addr) -> Option<&'static str> {
    let [first, second, ..] = a.octets();
    if a.is_unspecified() || first == 0 {
        // 0.0.0.0/8 "this network": connecting to 0.0.0.0 reaches the local host on Linux.
        Some("unspecified")
    } else if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if first == 100 && (64..128).contains(&second) {
        // 100.64.0.0/10, carrier-grade NAT: internal to a provider's network.
        Some("shared (carrier-grade NAT)")
    } else if a.is_link_local() {
        // 169.254.0.0/16, where cloud metadata services answer.
        Some("link-local")
    } else if a.is_multicast() {
        Some("multicast")
    } else if a.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn v6_kind(a: Ipv6Addr) -> Option<&'static str> {
    let first = a.segments()[0];
    if a.is_unspecified() {
        Some("unspecified")
    } else if a.is_loopback() {
        Some("loopback")
    } else if let Some(v4) = a.to_ipv4_mapped() {
        // ::ffff:a.b.c.d reaches the IPv4 address a.b.c.d: judge that one.
        v4_kind(v4)
    } else if a.segments()[..6] == [0; 6] {
        // ::a.b.c.d (deprecated IPv4-compatible): some stacks still route it to IPv4.
        v4_kind(Ipv4Addr::from(a.to_bits() as u32))
    } else if a.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // 64:ff9b::/96, NAT64: the gateway forwards to the embedded IPv4 address.
        v4_kind(Ipv4Addr::from(a.to_bits() as u32))
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        Some("private (site-local)")
    } else if a.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: UrlPolicy = UrlPolicy {
        allow_private: false,
    };
    const LOCAL: UrlPolicy = UrlPolicy {
        allow_private: true,
    };

    #[test]
    fn public_http_and_https_urls_are_accepted() {
        for url in [
            "https://merchant.example.com/hooks",
            "http://merchant.example.com:8080/hooks?tenant=1",
            "https://93.184.216.34/hooks",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/hooks",
        ] {
            let parsed = STRICT
                .check_url(url)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(matches!(parsed.scheme(), "http" | "https"));
        }
        assert_eq!(
            STRICT
                .check_url("HTTPS://Merchant.Example.com/x")
                .unwrap()
                .as_str(),
            "https://merchant.example.com/x"
        );
    }

    #[test]
    fn malformed_urls_are_refused_with_the_reason() {
        assert!(matches!(
            STRICT.check_url("not a url"),
            Err(UrlError::Invalid(_))
        ));
        assert!(matches!(
            STRICT.check_url("http://"),
            Err(UrlError::Invalid(_))
        ));
        assert_eq!(
            STRICT.check_url("ftp://example.com/x"),
            Err(UrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            STRICT.check_url("file:///etc/passwd"),
            Err(UrlError::Scheme("file".into()))
        );
        assert_eq!(
            STRICT.check_url("javascript:alert(1)"),
            Err(UrlError::Scheme("javascript".into()))
        );
        assert_eq!(
            STRICT.check_url("https://user:pw@example.com/"),
            Err(UrlError::UserInfo)
        );
        assert_eq!(
            STRICT.check_url("https://user@example.com/"),
            Err(UrlError::UserInfo)
        );
        assert_eq!(
            STRICT.check_url("https://example.com/#frag"),
            Err(UrlError::Fragment)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(STRICT.check_url(&long), Err(UrlError::TooLong));
        assert!(STRICT.check_url(&long[..MAX_URL_LEN]).is_ok());
    }

    #[test]
    fn non_public_literals_and_localhost_are_refused_unless_allowed() {
        let refused = [
            ("http://127.0.0.1:3000/webhooks/receiver", "loopback"),
            ("http://127.1/", "loopback"),
            ("http://0x7f.0.0.1/", "loopback"),
            ("http://2130706433/", "loopback"),
            ("http://10.1.2.3/", "private"),
            ("http://172.16.0.1/", "private"),
            ("http://192.168.1.1/", "private"),
            ("http://100.64.0.1/", "shared (carrier-grade NAT)"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://0.1.2.3/", "unspecified"),
            ("http://224.0.0.1/", "multicast"),
            ("http://255.255.255.255/", "broadcast"),
            ("http://[::1]/", "loopback"),
            ("http://[::]/", "unspecified"),
            ("http://[fe80::1]/", "link-local"),
            ("http://[fc00::1]/", "private (unique local)"),
            ("http://[fd12:3456::1]/", "private (unique local)"),
            ("http://[fec0::1]/", "private (site-local)"),
            ("http://[ff02::1]/", "multicast"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://[::ffff:10.0.0.1]/", "private"),
            ("http://[::ffff:169.254.169.254]/", "link-local"),
            ("http://[::127.0.0.1]/", "loopback"),
            ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
        ];
        for (url, kind) in refused {
            match STRICT.check_url(url) {
                Err(UrlError::NonPublicAddress { kind: k, .. }) => assert_eq!(k, kind, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
            LOCAL
                .check_url(url)
                .unwrap_or_else(|e| panic!("{url} allowed: {e}"));
        }
        for url in [
            "http://localhost:3000/x",
            "http://LOCALHOST./x",
            "http://api.localhost/x",
        ] {
            assert!(
                matches!(STRICT.check_url(url), Err(UrlError::LocalName(_))),
                "{url}"
            );
            LOCAL.check_url(url).unwrap();
        }
        // The message names the address and says why, for the API's problem details.
        let msg = STRICT
            .check_url("http://10.0.0.1/")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("10.0.0.1") && msg.contains("private"), "{msg}");
    }

    #[test]
    fn resolved_addresses_are_checked_the_same_way() {
        let private: IpAddr = "10.0.0.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.168.0.1".parse().unwrap();
        let public4: IpAddr = "93.184.216.34".parse().unwrap();
        let public6: IpAddr = "2606:4700::1111".parse().unwrap();
        assert!(STRICT.check_addr(private).is_err());
        assert!(STRICT.check_addr(mapped).is_err());
        assert!(STRICT.check_addr(public4).is_ok());
        assert!(STRICT.check_addr(public6).is_ok());
        assert!(LOCAL.check_addr(private).is_ok());
        assert!(LOCAL.check_addr(mapped).is_ok());
    }
}
