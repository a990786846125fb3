//! Hot paths of the SMTP wire, without sockets: receiving DATA and BDAT chunks (bytes/s,
//! the cost per message body a core pays before the spool write), parsing command lines, a whole
//! pipelined server transaction, parsing remote replies, the header `From:` check made
//! after DATA, and the outbound dot-stuffing writer (bytes/s, the cost per message body
//! delivery pays).

use std::hint::black_box;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use corerelay::account::{Account, check_header_from};
use corerelay::config::SenderDomains;
use corerelay::smtp::bdat::ChunkReceiver;
use corerelay::smtp::client::DataWriter;
use corerelay::smtp::command;
use corerelay::smtp::data::{DataProgress, DataReceiver};
use corerelay::smtp::reply::{Reply, parse as parse_reply};
use corerelay::smtp::server::{Policy, Session, SessionConfig, Step};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A dot-stuffed body of `size` bytes in 78-byte lines, one in 20 starting with a dot,
/// terminated by CRLF.CRLF.
fn data_stream(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 100);
    let mut i = 0;
    while out.len() < size {
        if i % 20 == 0 {
            out.extend_from_slice(b"..");
        }
        out.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs\r\n",
        );
        i += 1;
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn receive(stream: &[u8], read_bytes: usize) -> usize {
    let mut rx = DataReceiver::new(64 << 20, 1000);
    let mut body = Vec::new();
    let mut buf = BytesMut::with_capacity(read_bytes);
    for piece in stream.chunks(read_bytes) {
        buf.extend_from_slice(piece);
        if let DataProgress::Done(r) = rx.feed(&mut buf, &mut body) {
            return r.unwrap_or(0);
        }
    }
    0
}

fn bench_data(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_receive");
    for size in [2 << 10, 20 << 10, 100 << 10] {
        let stream = data_stream(size);
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(format!("{}KiB_in_16KiB_reads", size >> 10), |b| {
            b.iter(|| receive(black_box(&stream), 16 << 10))
        });
    }
    g.finish();
}

/// One BDAT LAST chunk of the body (text, not BINARYMIME) fed in `read_bytes` reads, as the
/// ingress does for a client that uses CHUNKING (corerelay's own client does when offered).
fn receive_bdat(body: &[u8], read_bytes: usize) -> usize {
    let mut rx = ChunkReceiver::new(64 << 20, 1000, false);
    rx.start_chunk(body.len() as u64);
    let mut chunks = Vec::new();
    let mut buf = BytesMut::with_capacity(read_bytes);
    for piece in body.chunks(read_bytes) {
        buf.extend_from_slice(piece);
        rx.feed(&mut buf, &mut chunks);
    }
    rx.finish(&mut chunks).unwrap_or(0)
}

fn bench_bdat(c: &mut Criterion) {
    let mut g = c.benchmark_group("bdat_receive");
    for size in [2 << 10, 20 << 10, 100 << 10] {
        let mut body = data_stream(size);
        // The DATA stream's terminator and dot-stuffing are not part of a BDAT chunk.
        body.truncate(body.len() - 3);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("{}KiB_in_16KiB_reads", size >> 10), |b| {
            b.iter(|| receive_bdat(black_box(&body), 16 << 10))
        });
    }
    g.finish();
}

fn bench_commands(c: &mut Criterion) {
    let lines: [&[u8]; 4] = [
        b"EHLO client.example.com",
        b"MAIL FROM:<newsletter+bounce-1234@mail.shop.example> SIZE=20480 BODY=8BITMIME",
        b"RCPT TO:<someone.with.a.long.name@recipient-domain.example>",
        b"DATA",
    ];
    let mut g = c.benchmark_group("command_parse");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("ehlo_mail_rcpt_data", |b| {
        b.iter(|| {
            for l in lines {
                let _ = black_box(command::parse(black_box(l)));
            }
        })
    });
    g.finish();
}

struct AcceptAll;

impl Policy for AcceptAll {
    type Account = ();
    fn identify(&self, _: std::net::IpAddr, _: &str) -> Result<(), Reply> {
        Ok(())
    }
}

/// One pipelined transaction through the server session: MAIL, RCPT, DATA and a 20 KiB body.
fn bench_session(c: &mut Criterion) {
    let config = Rc::new(SessionConfig {
        hostname: "bench.example".into(),
        message_max_bytes: 64 << 20,
        recipients_max_count: 100,
        command_line_max_bytes: 512,
        text_line_max_bytes: 1000,
        errors_max_count: 10,
        messages_per_connection_max_count: usize::MAX,
    });
    let mut input = b"EHLO c.example\r\n".to_vec();
    let mut txn = b"MAIL FROM:<a@shop.example>\r\nRCPT TO:<b@dest.example>\r\nDATA\r\n".to_vec();
    txn.extend_from_slice(&data_stream(20 << 10));
    input.extend_from_slice(&txn);
    let mut g = c.benchmark_group("server_session");
    g.throughput(Throughput::Bytes(txn.len() as u64));
    g.bench_function("pipelined_20KiB_transaction", |b| {
        b.iter(|| {
            let mut s = Session::new(config.clone(), AcceptAll, [127, 0, 0, 1].into());
            let mut buf = BytesMut::from(&input[..]);
            loop {
                match s.step(&mut buf) {
                    Step::Message(t) => {
                        black_box(s.message_done(Ok(())));
                        return t.body_bytes;
                    }
                    Step::NeedMore | Step::Close(_) | Step::Authenticate(_) | Step::StartTls(_) => return 0,
                    Step::Reply(r) => {
                        black_box(r);
                    }
                }
            }
        })
    });
    g.finish();
}

fn bench_replies(c: &mut Criterion) {
    let ehlo = Bytes::from_static(b"250-mx.example.net at your service\r\n250-SIZE 157286400\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n");
    let mut g = c.benchmark_group("reply_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ehlo_7_lines", |b| b.iter(|| parse_reply(black_box(&ehlo))));
    g.finish();
}

/// A body as the load generator sends it: its header block, then 78-byte lines, one in 20
/// starting with a dot (so the writer stuffs some), in 16 KiB chunks as the ingress slices
/// them.
fn outbound_body(size: usize) -> Vec<Bytes> {
    let mut body = b"From: <load@load.example>\r\nTo: <sink@sink.example>\r\nSubject: bench\r\n\r\n".to_vec();
    let mut i = 0;
    while body.len() < size {
        if i % 20 == 0 {
            body.push(b'.');
        }
        body.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs\r\n",
        );
        i += 1;
    }
    body.chunks(16 << 10).map(Bytes::copy_from_slice).collect()
}

/// The delivery driver's use of the writer: a 64 KiB send buffer, flushed when full.
fn write_out(chunks: &[Bytes], out: &mut BytesMut) -> usize {
    const SEND_BUFFER_BYTES: usize = 64 << 10;
    let mut writer = DataWriter::new();
    let mut sent = 0;
    for chunk in chunks {
        let mut pos = 0;
        while pos < chunk.len() {
            pos += writer.write(&chunk[pos..], out, SEND_BUFFER_BYTES);
            if out.len() >= SEND_BUFFER_BYTES {
                sent += out.len();
                out.clear();
            }
        }
    }
    writer.finish(out);
    sent += out.len();
    out.clear();
    sent
}

fn bench_data_writer(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_write");
    let mut out = BytesMut::with_capacity(64 << 10);
    for size in [2 << 10, 20 << 10, 100 << 10] {
        let chunks = outbound_body(size);
        g.throughput(Throughput::Bytes(chunks.iter().map(|c| c.len() as u64).sum()));
        g.bench_function(format!("{}KiB_dot_stuffed", size >> 10), |b| {
            b.iter(|| write_out(black_box(&chunks), &mut out))
        });
    }
    g.finish();
}

fn bench_header_from(c: &mut Criterion) {
    let account = Account {
        id: "shop".into(),
        networks: vec![],
        sender_domains: SenderDomains::List(vec!["mail.shop.example".into(), "shop.example".into()]),
        owner: 0,
        credentials: vec![],
        share: Default::default(),
    };
    let headers = "Return-Path: <bounce-1234@mail.shop.example>\r\nFrom: \"Shop News\" <news@shop.example>\r\n\
To: <someone@recipient.example>\r\nSubject: Our autumn collection is here\r\nDate: Fri, 27 Nov 2026 23:14:29 +0000\r\n\
Message-ID: <20261127231429.1234@mail.shop.example>\r\nMIME-Version: 1.0\r\nList-Unsubscribe: <https://shop.example/u/1234>\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n";
    let mut first = headers.as_bytes().to_vec();
    first.extend(std::iter::repeat_n(b'x', 16 << 10).take((16 << 10) - first.len()));
    let body = [Bytes::from(first), Bytes::from(vec![b'y'; 4 << 10])];
    let mut g = c.benchmark_group("header_from_check");
    g.throughput(Throughput::Elements(1));
    g.bench_function("10_headers_in_first_chunk", |b| {
        b.iter(|| check_header_from(black_box(&account), black_box(&body)))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_data,
    bench_bdat,
    bench_commands,
    bench_session,
    bench_replies,
    bench_data_writer,
    bench_header_from
);
criterion_main!(benches);
