//! Ports are checked before any child starts, so a taken port is one clear error naming the port
//! and the flag that changes it, rather than a child crashing in a loop. Port 0 picks a free port.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A port that could not be had.
#[derive(Debug, thiserror::Error)]
#[error("port {port} for the {service} is already in use: pick another with {flag} {hint}")]
pub(crate) struct PortTaken {
    port: u16,
    service: &'static str,
    flag: &'static str,
    hint: &'static str,
}

/// Resolves `port` on loopback: checks it is free, or picks a free one for 0.
pub(crate) fn reserve(
    port: u16,
    service: &'static str,
    flag: &'static str,
) -> Result<SocketAddr, PortTaken> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|_| PortTaken {
        port,
        service,
        flag,
        hint: "(or 0 for any free port)",
    })?;
    // The listener is dropped here and the child binds the same address moments later; with
    // SO_REUSEADDR (set by tokio) a just-closed port is immediately bindable again.
    Ok(listener
        .local_addr()
        .expect("a bound listener has an address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_the_port_and_the_flag() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let error = reserve(port, "payment API", "--api-port")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&port.to_string()) && error.contains("--api-port"),
            "{error}"
        );
    }

    #[test]
    fn port_zero_picks_a_free_port() {
        assert_ne!(reserve(0, "payment API", "--api-port").unwrap().port(), 0);
    }
}
