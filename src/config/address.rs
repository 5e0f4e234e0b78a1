//! Listen and backend addresses: `host:port` with a host name, an IPv4
//! address or a bracketed IPv6 address.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Splits `host:port` (host name, IPv4, or `[IPv6]`) and checks both parts.
/// Port 0 is returned as is; callers decide whether it is allowed.
pub fn parse_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("expected [IPv6]:port, got {address:?}"))?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        (host, port)
    } else {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("expected host:port, got {address:?}"))?;
        if host.contains(':') {
            return Err(format!(
                "write an IPv6 address in brackets, e.g. \"[::1]:19530\", got {address:?}"
            ));
        }
        if !is_host_name_or_ipv4(host) {
            return Err(format!(
                "{host:?} is not a host name or IPv4 address (in {address:?})"
            ));
        }
        (host, port)
    };
    let port = port.parse::<u16>().map_err(|_| {
        format!("port must be a number from 1 to 65535, got {port:?} (in {address:?})")
    })?;
    Ok((host.to_string(), port))
}

fn is_host_name_or_ipv4(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    // All-numeric dotted text that is not a valid IPv4 address ("10.0.0.300").
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return false;
    }
    // Underscores are not valid in DNS names but appear in Docker service names.
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    !host.is_empty() && host.len() <= 253 && host.split('.').all(label_ok)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PortZero {
    Allowed,
    Rejected,
}

pub(super) fn check_address(address: &str, port_zero: PortZero) -> Result<(String, u16), String> {
    let (host, port) = parse_host_port(address)?;
    if port == 0 && port_zero == PortZero::Rejected {
        return Err(format!(
            "port must be from 1 to 65535, got 0 (in {address:?})"
        ));
    }
    Ok((host, port))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            parse_host_port("10.0.0.1:19530"),
            Ok(("10.0.0.1".to_string(), 19530))
        );
        assert_eq!(
            parse_host_port("milvus_ro-1.svc:1"),
            Ok(("milvus_ro-1.svc".to_string(), 1))
        );
        assert_eq!(
            parse_host_port("[::1]:19530"),
            Ok(("::1".to_string(), 19530))
        );
        for bad in [
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:65536",
            "10.0.0.300:1",
            ":19530",
            "::1:19530",
            "[zz]:1",
            "-host:1",
            "a b:1",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad} should be rejected");
        }
        assert!(check_address("h:0", PortZero::Rejected).is_err());
        assert!(check_address("h:0", PortZero::Allowed).is_ok());
    }
}
