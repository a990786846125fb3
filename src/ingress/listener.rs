//! Listening sockets: built with socket2 so the backlog is ours to set (glommio's own bind
//! fixes it at 1024), with SO_REUSEPORT so every core binds the same address, and handed to
//! glommio as raw descriptors. The SMTP sockets of every core are made on one thread, in
//! core order, so their order in each SO_REUSEPORT group is known ([`listen_per_core`]).
//! Also the accept loop of one listener on one core.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use super::connection::serve;
use super::{Ingress, ListenerRuntime};
use crate::observe::Event;

/// Reserves `addr` for the process: binds a socket with SO_REUSEPORT that never listens
/// (so the kernel never hands it a connection) and returns it with the bound address. With
/// port 0 this is how every core learns the one port they all bind.
pub fn reserve(addr: SocketAddr) -> io::Result<(Socket, SocketAddr)> {
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP socket address"))?;
    Ok((socket, bound))
}

/// Binds and listens on `addr` with SO_REUSEPORT, for one core.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    listen(addr, backlog).map(adopt)
}

/// Every core's listening socket for each of `addrs`, as `[core][listener]`, created on
/// this thread core 0 first. A socket joins its address's SO_REUSEPORT group when it
/// starts listening (a socket that is only bound, as [`reserve`]'s, never joins), and its
/// index in the group is the order it joined: so socket `k` of every group is core `k`'s,
/// which connection steering (`ingress::steer`) relies on.
pub fn listen_per_core(addrs: &[SocketAddr], cores: usize, backlog: u32) -> io::Result<Vec<Vec<Socket>>> {
    let mut per_core: Vec<Vec<Socket>> = (0..cores).map(|_| Vec::with_capacity(addrs.len())).collect();
    for addr in addrs {
        for sockets in per_core.iter_mut() {
            let socket =
                listen(*addr, backlog).map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?;
            sockets.push(socket);
        }
    }
    Ok(per_core)
}

/// A socket bound to `addr` and listening, with SO_REUSEPORT.
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket)
}

/// Hands a listening socket to glommio, on the core that will accept on it.
pub fn adopt(socket: Socket) -> TcpListener {
    // SAFETY: the descriptor comes from a socket we own, set listening; ownership moves
    // to the glommio listener, which closes it.
    unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Accepts clients of one listener on this core for ever, one task per connection. The
/// connection limits are applied by the connection task, after a PROXY header has named
/// the real client.
pub async fn accept_loop(listener: Rc<TcpListener>, ingress: Rc<Ingress>, runtime: Rc<ListenerRuntime>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            ingress.stop.wait().await;
            None
        })
        .await;
        // Stopping: dropping the listener closes it on this core (steering keeps only a
        // weak reference).
        let Some(accepted) = accepted else { return };
        let stream = match accepted {
            Ok(s) => {
                backoff = Duration::from_millis(5);
                s
            }
            Err(e) => {
                // Out of descriptors or memory: wait instead of spinning, as mini-redis does.
                ingress.log.emit(Event::Error {
                    what: format!("accept failed: {e}"),
                });
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (ingress, runtime) = (ingress.clone(), runtime.clone());
        glommio::spawn_local(async move { serve(stream, ingress, runtime).await }).detach();
    }
}
