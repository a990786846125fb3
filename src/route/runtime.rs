//! hickory's `RuntimeProvider` for glommio: UDP and TCP sockets, timers and task spawning.
//!
//! hickory drives its lookups through this trait, so implementing it is what lets each core run
//! its own resolver (and its own cache) on its own executor, with no tokio runtime and no
//! cross-thread hop. hickory demands `Send + Sync` for sockets, handles and futures; glommio's
//! are `!Send` because they belong to one executor. Everything glommio is therefore wrapped in a
//! [`SendWrapper`], which panics if touched from another thread. That cannot happen here: a
//! [`crate::route::Resolver`] is `!Send`, so it and every socket and task it creates stay on the
//! executor thread that built it.
//!
//! glommio's UDP socket offers only `async fn recv_from`/`send_to`, while hickory polls
//! (`poll_recv_from`/`poll_send_to`). The adapter keeps the pending glommio future between polls;
//! the future owns its buffer (`'static`) and the bytes are copied to the caller's buffer when a
//! datagram arrives. TC→TCP fallback needs nothing here: hickory's name-server pool retries a
//! truncated answer over the TCP connection this provider opens.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_lite::io::{AsyncRead, AsyncWrite};
use hickory_resolver::net::runtime::{DnsTcpStream, DnsUdpSocket, RuntimeProvider, Spawn, Time};
use send_wrapper::SendWrapper;

/// TCP connect timeout when hickory passes none (it normally passes the resolver timeout).
const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// The provider handed to `hickory_resolver::Resolver::builder_with_config`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GlommioRuntime;

type BoxSendFuture<T> = Pin<Box<dyn Send + Future<Output = io::Result<T>>>>;

impl RuntimeProvider for GlommioRuntime {
    type Handle = GlommioHandle;
    type Timer = GlommioTime;
    type Udp = GlommioUdp;
    type Tcp = GlommioTcp;

    fn create_handle(&self) -> GlommioHandle {
        GlommioHandle
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> BoxSendFuture<GlommioTcp> {
        let timeout = timeout
            .filter(|t| !t.is_zero())
            .unwrap_or(CONNECT_TIMEOUT_DEFAULT);
        Box::pin(SendWrapper::new(async move {
            // glommio connects without a bind step; corerelay never configures a DNS source
            // address, so refusing is better than silently ignoring one.
            if bind_addr.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "binding a DNS TCP source address is not supported",
                ));
            }
            let stream = glommio::net::TcpStream::connect_timeout(server_addr, timeout)
                .await
                .map_err(io::Error::from)?;
            stream.set_nodelay(true).map_err(io::Error::from)?;
            Ok(GlommioTcp(SendWrapper::new(stream)))
        }))
    }

    fn bind_udp(&self, local_addr: SocketAddr, _server_addr: SocketAddr) -> BoxSendFuture<GlommioUdp> {
        // Binding is synchronous, so the future is ready at once, as hickory asks.
        Box::pin(futures_lite::future::ready(bind_udp(local_addr)))
    }
}

/// Binds a UDP socket without SO_REUSEPORT (glommio's own `UdpSocket::bind` sets it).
///
/// hickory picks a random source port and relies on EADDRINUSE to notice a port already taken;
/// with SO_REUSEPORT two sockets (say, two cores' resolvers) could share a port and the kernel
/// would hand one core's answers to the other.
fn bind_udp(local_addr: SocketAddr) -> io::Result<GlommioUdp> {
    let socket = std::net::UdpSocket::bind(local_addr)?;
    let socket = glommio::net::UdpSocket::from(socket2_04::Socket::from(socket));
    Ok(GlommioUdp(SendWrapper::new(UdpState {
        socket: Rc::new(socket),
        recv: RefCell::new(None),
        send: RefCell::new(None),
    })))
}

/// Spawns hickory's background tasks (connection drivers) on the current glommio executor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GlommioHandle;

impl Spawn for GlommioHandle {
    fn spawn_bg(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        glommio::spawn_local(future).detach();
    }
}

/// Delays and timeouts on glommio's timer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GlommioTime;

#[async_trait]
impl Time for GlommioTime {
    async fn delay_for(duration: Duration) {
        SendWrapper::new(glommio::timer::sleep(duration)).await
    }

    async fn timeout<F: 'static + Future + Send>(
        duration: Duration,
        future: F,
    ) -> Result<F::Output, io::Error> {
        let expired = SendWrapper::new(async move {
            glommio::timer::sleep(duration).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "DNS request timed out"))
        });
        // `or` polls the work first, so an answer that is ready wins over a timer that is too.
        futures_lite::future::or(async move { Ok(future.await) }, expired).await
    }
}

type RecvFuture = Pin<Box<dyn Future<Output = io::Result<(Vec<u8>, SocketAddr)>>>>;
type SendFuture = Pin<Box<dyn Future<Output = io::Result<usize>>>>;

/// A glommio UDP socket that hickory can poll.
pub(crate) struct GlommioUdp(SendWrapper<UdpState>);

struct UdpState {
    socket: Rc<glommio::net::UdpSocket>,
    /// The receive in flight between polls; it owns a buffer of the size first asked for.
    recv: RefCell<Option<RecvFuture>>,
    /// The send in flight between polls; it owns a copy of the datagram.
    send: RefCell<Option<SendFuture>>,
}

/// hickory polls one socket from one request at a time; a second concurrent poll would find the
/// slot borrowed. That is answered with an error rather than a panic.
fn concurrent_poll_error() -> io::Error {
    io::Error::new(io::ErrorKind::ResourceBusy, "UDP socket polled concurrently")
}

impl DnsUdpSocket for GlommioUdp {
    type Time = GlommioTime;

    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>> {
        let state = &*self.0;
        let Ok(mut slot) = state.recv.try_borrow_mut() else {
            return Poll::Ready(Err(concurrent_poll_error()));
        };
        let pending = slot.get_or_insert_with(|| {
            let socket = Rc::clone(&state.socket);
            let capacity = buf.len();
            Box::pin(async move {
                let mut datagram = vec![0; capacity];
                let (len, from) = socket.recv_from(&mut datagram).await.map_err(io::Error::from)?;
                datagram.truncate(len);
                Ok((datagram, from))
            })
        });
        let Poll::Ready(result) = pending.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        *slot = None;
        Poll::Ready(result.map(|(datagram, from)| {
            let len = datagram.len().min(buf.len());
            buf[..len].copy_from_slice(&datagram[..len]);
            (len, from)
        }))
    }

    fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], target: SocketAddr) -> Poll<io::Result<usize>> {
        let state = &*self.0;
        let Ok(mut slot) = state.send.try_borrow_mut() else {
            return Poll::Ready(Err(concurrent_poll_error()));
        };
        let pending = slot.get_or_insert_with(|| {
            let socket = Rc::clone(&state.socket);
            let datagram = buf.to_vec();
            Box::pin(async move { socket.send_to(&datagram, target).await.map_err(io::Error::from) })
        });
        let Poll::Ready(result) = pending.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        *slot = None;
        Poll::Ready(result)
    }
}

/// A glommio TCP stream that hickory can use for DNS over TCP.
pub(crate) struct GlommioTcp(SendWrapper<glommio::net::TcpStream>);

impl DnsTcpStream for GlommioTcp {
    type Time = GlommioTime;
}

impl AsyncRead for GlommioTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for GlommioTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_close(cx)
    }
}
