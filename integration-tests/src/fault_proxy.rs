//! A TCP proxy on a free loopback port that can cut the connection to the server it fronts: a
//! database outage a test can start and end at will, for any backend, local or shared.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Forwards each connection to `target` until [`cut`](Self::cut), then refuses every connection
/// (accepted and closed at once, as a dead server behind a load balancer looks) until
/// [`restore`](Self::restore).
#[derive(Debug)]
pub struct FaultProxy {
    address: String,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    closed: AtomicBool,
    /// Both ends of every open connection, to close them when cut.
    open: Mutex<Vec<TcpStream>>,
}

impl FaultProxy {
    /// A proxy to `target` (`host:port`).
    pub fn start(target: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let target = target.to_owned();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.closed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if accepting.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let ends = (client.try_clone(), server.try_clone());
                if let (Ok(c), Ok(s)) = ends {
                    accepting.open.lock().unwrap().extend([c, s]);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        FaultProxy { address, shared }
    }

    /// `host:port` to connect to instead of the server's.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
        self.shared.closed.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees `closed` and ends.
        let _ = TcpStream::connect(&self.address);
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
