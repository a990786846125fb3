//! The byte stream under an outbound connection: plain TCP, or TLS after STARTTLS; and the
//! connect itself, from a chosen local source address when the egress source has one.
//!
//! glommio connects only from an address the kernel picks, so a bound connect is done
//! here: a socket2 socket is bound (with `IP_BIND_ADDRESS_NO_PORT`, so the port is chosen
//! at connect time and many sources do not exhaust ports), connected without blocking,
//! handed to glommio, and watched until the kernel reports it connected or failed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// An outbound connection's stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Taken apart (during a STARTTLS handshake, or after it failed): every I/O fails.
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Acknowledges the next segments from the server at once instead of delaying the ACK
    /// (`TCP_QUICKACK`, which the kernel clears again by itself). Needed after a flight
    /// that the server may answer in two writes (see `Connection::run`, pipelined BDAT).
    pub fn quickack(&self) -> io::Result<()> {
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
            Stream::Closed => return Err(closed()),
        };
        SockRef::from(&socket_of(tcp)).set_tcp_quickack(true)
    }
}

/// The socket under a glommio stream, for the options and calls glommio does not offer
/// (glommio's stream implements `AsRawFd` but not `AsFd`).
fn socket_of(tcp: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: `tcp` owns the descriptor and keeps it open for as long as it is borrowed, and
    // the returned borrow cannot outlive that borrow of `tcp`.
    unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) }
}

/// Opens a TCP connection to `addr` within `timeout`, from `bind` when given.
pub async fn connect(addr: SocketAddr, bind: Option<IpAddr>, timeout: Duration) -> io::Result<TcpStream> {
    let stream = match bind {
        None => TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)?,
        Some(source) => connect_from(addr, source, timeout).await?,
    };
    stream.set_nodelay(true).map_err(io::Error::from)?;
    Ok(stream)
}

async fn connect_from(addr: SocketAddr, source: IpAddr, timeout: Duration) -> io::Result<TcpStream> {
    if source.is_ipv4() != addr.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("source {source} and destination {addr} are of different IP versions"),
        ));
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if source.is_ipv4() {
        bind_address_no_port(&socket);
    }
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        if socket.peer_addr().is_ok() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out"));
        }
        // glommio has no "wait until writable" for a foreign socket: poll the state with a
        // growing pause (loopback and LAN connects finish in the first few checks).
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    // SAFETY: the descriptor comes from `into_raw_fd`, so it is open, a connected TCP
    // socket, and owned by nothing else; glommio's stream takes ownership of it.
    Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) })
}

/// `IP_BIND_ADDRESS_NO_PORT`: defer the local port choice to connect, so the kernel can
/// reuse a port towards different destinations. Best effort: without it bind still works.
fn bind_address_no_port(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer/length pair to a live c_int.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    /// glommio's stream writes one buffer per call; a plain stream sends them all with one
    /// `sendmsg` (without waiting, as glommio's own first attempt does) and falls back to
    /// glommio's write of the first buffer, which waits for room, when the socket is full.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => {
                let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                match SockRef::from(&socket_of(s)).send_vectored_with_flags(bufs, flags) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
                        Pin::new(s).poll_write(cx, first)
                    }
                    done => Poll::Ready(done),
                }
            }
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;
    use glommio::net::TcpListener;

    /// Runs `test` on an executor of its own with a listener on 127.0.0.1 and the task
    /// accepting its first connection.
    fn with_listener<F, Fut>(test: F)
    where
        F: FnOnce(SocketAddr, glommio::Task<TcpStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        LocalExecutorBuilder::default()
            .io_memory(512 << 10)
            .spawn(|| async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let accept = glommio::spawn_local(async move { listener.accept().await.unwrap() });
                test(addr, accept).await
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn connects_from_the_chosen_loopback_source() {
        with_listener(|addr, accept| async move {
            let source: IpAddr = "127.0.0.7".parse().unwrap();
            let out = connect(addr, Some(source), Duration::from_secs(2)).await.unwrap();
            let accepted = accept.await;
            assert_eq!(accepted.peer_addr().unwrap().ip(), source);
            assert_eq!(out.local_addr().unwrap().ip(), source);

            // Nobody listens: refused, not a hang.
            drop(accepted);
            let closed = TcpListener::bind("127.0.0.1:0").unwrap();
            let dead = closed.local_addr().unwrap();
            drop(closed);
            let e = connect(dead, Some(source), Duration::from_secs(2))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
            let v6: IpAddr = "::1".parse().unwrap();
            assert!(connect(addr, Some(v6), Duration::from_secs(1)).await.is_err());
        });
    }

    /// The quick-ACK switch reaches the socket under the stream (the kernel reports it set
    /// right after), and a closed stream says so rather than touching a stale descriptor.
    #[test]
    fn quickack_is_set_on_the_socket_and_refused_on_a_closed_stream() {
        with_listener(|addr, accept| async move {
            let tcp = connect(addr, None, Duration::from_secs(2)).await.unwrap();
            let _accepted = accept.await;
            let fd = tcp.as_raw_fd();
            let stream = Stream::Plain(tcp);
            // SAFETY: `stream` owns the socket and outlives the borrow.
            let socket = unsafe { BorrowedFd::borrow_raw(fd) };
            SockRef::from(&socket).set_tcp_quickack(false).unwrap();
            stream.quickack().unwrap();
            assert!(
                SockRef::from(&socket).tcp_quickack().unwrap(),
                "TCP_QUICKACK is on"
            );
            assert_eq!(
                Stream::Closed.quickack().unwrap_err().kind(),
                io::ErrorKind::NotConnected
            );
        });
    }
}
