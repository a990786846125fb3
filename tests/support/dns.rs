//! A small real authoritative DNS server on 127.0.0.1 for the tests, UDP and TCP on one port.
//!
//! It speaks the wire protocol through hickory-proto's message types, from plain std threads
//! (no async runtime), so the resolver under test goes through real sockets, real truncation
//! and real negative answers. Records can be changed while it runs.
//!
//! Behaviour: a name with records answers NOERROR with those of the asked type (possibly none);
//! an unknown name answers NXDOMAIN; negative answers carry an SOA in the authority section whose
//! TTL and minimum are the current TTL, so resolvers cache them (RFC 2308). Every record is
//! served with the current TTL: 300 s unless [`TestDns::set_ttl`] changes it. Over UDP an answer
//! larger than the client's EDNS payload size (512 bytes without EDNS) is replaced by an empty
//! truncated one (TC=1), which sends the client to TCP. The server stops when dropped.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// How often blocked threads wake to notice a stop.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The EDNS payload size the server advertises.
const SERVER_PAYLOAD_BYTES: u16 = 1232;
const TTL_DEFAULT_SECS: u32 = 300;

pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Zone {
    data: Mutex<ZoneData>,
    queries: AtomicUsize,
    tcp_queries: AtomicUsize,
}

#[derive(Default)]
struct ZoneData {
    /// Lowercase fully qualified owner name → its records' data.
    records: HashMap<Name, Vec<RData>>,
    servfail: HashSet<Name>,
    ttl_secs: Option<u32>,
}

impl TestDns {
    /// Binds UDP and TCP on the same free port of 127.0.0.1 and starts serving.
    pub fn start() -> TestDns {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("local addr");
        let zone = Arc::new(Zone::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = vec![
            spawn("test-dns-udp", {
                let (zone, stop) = (zone.clone(), stop.clone());
                move || serve_udp(udp, &zone, &stop)
            }),
            spawn("test-dns-tcp", {
                let (zone, stop) = (zone.clone(), stop.clone());
                move || serve_tcp(tcp, zone, stop)
            }),
        ];
        TestDns {
            addr,
            zone,
            stop,
            threads,
        }
    }

    pub fn add_mx(&self, domain: &str, preference: u16, exchange: &str) {
        self.add(domain, RData::MX(MX::new(preference, name(exchange))));
    }

    pub fn add_a(&self, host: &str, ip: Ipv4Addr) {
        self.add(host, RData::A(A(ip)));
    }

    pub fn add_aaaa(&self, host: &str, ip: Ipv6Addr) {
        self.add(host, RData::AAAA(AAAA(ip)));
    }

    /// A TXT record: a name that exists without MX or address records.
    pub fn add_txt(&self, owner: &str, text: &str) {
        self.add(owner, RData::TXT(TXT::new(vec![text.to_string()])));
    }

    /// Answers SERVFAIL for every question about that name.
    pub fn set_servfail(&self, domain: &str) {
        self.data().servfail.insert(name(domain));
    }

    /// The TTL of every record and negative answer served from now on.
    pub fn set_ttl(&self, ttl_secs: u32) {
        self.data().ttl_secs = Some(ttl_secs);
    }

    /// How many queries it answered, over UDP and TCP.
    pub fn queries(&self) -> usize {
        self.zone.queries.load(Ordering::SeqCst)
    }

    /// How many of those came over TCP.
    pub fn tcp_queries(&self) -> usize {
        self.zone.tcp_queries.load(Ordering::SeqCst)
    }

    fn add(&self, owner: &str, data: RData) {
        self.data().records.entry(name(owner)).or_default().push(data);
    }

    fn data(&self) -> MutexGuard<'_, ZoneData> {
        self.zone.data.lock().expect("zone lock")
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn")
}

/// A lowercase fully qualified name; "." is the root (a null MX's exchange).
fn name(text: &str) -> Name {
    let mut name = Name::from_ascii(text).expect("test name").to_lowercase();
    name.set_fqdn(true);
    name
}

/// UDP and TCP on one port: take a free UDP port, then try TCP on it (rarely taken; retry).
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().expect("local addr")) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

fn serve_udp(socket: UdpSocket, zone: &Zone, stop: &AtomicBool) {
    socket
        .set_read_timeout(Some(POLL_INTERVAL))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(request) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let response = zone.answer(&request);
        let limit = request.edns.as_ref().map_or(512, |e| e.max_payload().max(512));
        let Ok(mut bytes) = response.to_vec() else {
            continue;
        };
        if bytes.len() > usize::from(limit) {
            let Ok(truncated) = response.truncate().to_vec() else {
                continue;
            };
            bytes = truncated;
        }
        zone.queries.fetch_add(1, Ordering::SeqCst);
        let _ = socket.send_to(&bytes, from);
    }
}

fn serve_tcp(listener: TcpListener, zone: Arc<Zone>, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (zone, stop) = (zone.clone(), stop.clone());
                // Clients keep connections open, so each gets its own thread; it ends on EOF
                // or when the server stops.
                spawn("test-dns-conn", move || {
                    let _ = serve_connection(stream, &zone, &stop);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_connection(mut stream: TcpStream, zone: &Zone, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    loop {
        let mut len = [0u8; 2];
        read_full(&mut stream, &mut len, stop)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        read_full(&mut stream, &mut buf, stop)?;
        let request = Message::from_vec(&buf).map_err(io::Error::other)?;
        let bytes = zone.answer(&request).to_vec().map_err(io::Error::other)?;
        let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
        zone.queries.fetch_add(1, Ordering::SeqCst);
        zone.tcp_queries.fetch_add(1, Ordering::SeqCst);
        stream.write_all(&len.to_be_bytes())?;
        stream.write_all(&bytes)?;
    }
}

/// Fills `buf`, waking every poll interval to check for a stop; EOF or a stop is an error.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("stopped"));
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Zone {
    fn answer(&self, request: &Message) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_queries(request.queries.iter().cloned());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(SERVER_PAYLOAD_BYTES);
            response.set_edns(edns);
        }
        let Some(query) = request.queries.first() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        let data = self.data.lock().expect("zone lock");
        let ttl = data.ttl_secs.unwrap_or(TTL_DEFAULT_SECS);
        let owner = query.name().to_lowercase();
        if data.servfail.contains(&owner) {
            response.metadata.response_code = ResponseCode::ServFail;
            return response;
        }
        let Some(records) = data.records.get(&owner) else {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa(&owner, ttl));
            return response;
        };
        // Answers carry the name as asked, so a client that randomises case sees it echoed.
        let asked = query.query_type();
        let answers: Vec<Record> = records
            .iter()
            .filter(|data| data.record_type() == asked || asked == RecordType::ANY)
            .map(|data| Record::from_rdata(query.name().clone(), ttl, data.clone()))
            .collect();
        if answers.is_empty() {
            response.add_authority(soa(&owner, ttl));
        }
        response.add_answers(answers);
        response
    }
}

/// The SOA of the zone holding `owner`: its last label serves as the apex.
fn soa(owner: &Name, ttl: u32) -> Record {
    let apex = owner.trim_to(1);
    let data = SOA::new(
        name("ns.test-dns.invalid."),
        name("hostmaster.test-dns.invalid."),
        1,
        3600,
        600,
        86400,
        ttl,
    );
    Record::from_rdata(apex, ttl, RData::SOA(data))
}
