//! Loopback ports for local services. Everything listens on 127.0.0.1 only.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// The only address local services listen on.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A port that is free right now on 127.0.0.1 (the OS picks it). Another process could take it
/// before the service binds it; services started on it fail loudly in that case.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((LOOPBACK, 0))?;
    Ok(listener.local_addr()?.port())
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from((LOOPBACK, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls until 127.0.0.1:`port` accepts connections, or `timeout` passes; returns whether it did.
pub fn wait_until_accepting(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if accepts_connections(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_bindable_and_reports_listening_once_bound() {
        let port = free_port().expect("free port");
        assert!(!accepts_connections(port), "nothing listens on {port} yet");
        let listener = TcpListener::bind((LOOPBACK, port)).expect("bind the free port");
        assert!(wait_until_accepting(port, Duration::from_secs(2)));
        drop(listener);
        assert!(!wait_until_accepting(port, Duration::from_millis(100)));
    }
}
