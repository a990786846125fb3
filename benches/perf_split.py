#!/usr/bin/env python3
"""Splits a `perf record -g` profile of the relay into where a message's CPU time goes.

usage: perf script -i perf.data -F comm,tid,ip,sym | benches/perf_split.py CPU_SECONDS MESSAGES

Each sample is put in one bucket: user-space samples by their innermost function, kernel
samples by what brought the thread into the kernel (the system call, an interrupt, or the
io_uring worker thread it runs on). CPU_SECONDS (the relay's CPU time over the profiled
interval) and MESSAGES turn shares into microseconds per message.

The buckets are coarse on purpose: with a software clock in a VM, kernel samples pile up
where interrupts are re-enabled (finish_task_switch, spin_unlock_irqrestore), so a kernel
symbol is less telling than the path that entered the kernel.
"""

import collections
import re
import sys

USER = [
    (r"DataReceiver::feed", "user: SMTP DATA receive (smtp::data::DataReceiver::feed)"),
    (r"ChunkReceiver::", "user: SMTP BDAT receive (smtp::bdat::ChunkReceiver::feed)"),
    (r"DataWriter::write", "user: outbound dot-stuffing (smtp::client::DataWriter::write)"),
    (r"memset", "user: memset (read buffers zeroed by BytesMut::resize before each read)"),
    (r"memmove|memcpy", "user: memcpy (spool record encode, send buffers)"),
    (r"crc32c", "user: spool checksums (crc32c)"),
    (r"mail_parser|check_header_from", "user: header From check (mail_parser)"),
    (r"serde_json|chrono|observe::log|core::fmt|itoa|DelayedFormat|Strftime", "user: log records, formatting"),
    (r"^(malloc|free|cfree|realloc|calloc|_int_|malloc_consolidate|__libc_malloc|__rdl_|__rust_)", "user: allocator"),
    (r"clock_gettime|Timespec", "user: clock reads"),
    (r"glommio|io_uring|^syscall$|^__send$|^__libc_recv$", "user: glommio executor, reactor and system call stubs"),
]
KERNEL = [
    ("sendto", "kernel: TCP send (includes the loopback receive of the peer)"),
    ("recvfrom", "kernel: TCP receive"),
    ("membarrier", "kernel: executor going to sleep: membarrier (IPIs to every core of the process)"),
    ("io_cqring_wait", "kernel: executor going to sleep: io_uring wait"),
    ("eventfd_write", "kernel: waking another core's executor (eventfd)"),
    ("io_submit_sqes", "kernel: io_uring submissions run inline (socket I/O, file writes)"),
    ("exit_to_user_mode_loop", "kernel: preempted on return from a system call"),
    ("asm_sysvec", "kernel: interrupts and IPIs taken in user code"),
    ("asm_common_interrupt", "kernel: interrupts and IPIs taken in user code"),
    ("do_syscall_64", "kernel: other system calls"),
]


def bucket(comm, frames):
    kernel = [sym for is_kernel, sym in frames if is_kernel]
    if comm.startswith("iou-wrk"):
        if any("fsync" in sym for sym in kernel):
            return "kernel: fdatasync on an io_uring worker thread"
        return "kernel: io_uring worker threads waking and sleeping"
    if not kernel:
        leaf = frames[0][1] if frames else "?"
        for pattern, name in USER:
            if re.search(pattern, leaf):
                return name
        return "user: other corerelay and library code"
    for key, name in KERNEL:
        if any(key in sym for sym in kernel):
            return name
    return "kernel: other (" + kernel[-1] + ")"


def samples(lines):
    comm, frames = None, []
    for line in lines:
        if not line.strip():
            continue
        if not line[0].isspace():
            if comm is not None:
                yield comm, frames
            comm, frames = line.split()[0], []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            frames.append((parts[0].startswith("ffffffff"), parts[1]))
    if comm is not None:
        yield comm, frames


def main():
    cpu_seconds, messages = float(sys.argv[1]), int(sys.argv[2])
    counts = collections.Counter(bucket(c, f) for c, f in samples(sys.stdin))
    total = sum(counts.values())
    us_per_message = cpu_seconds * 1e6 / max(messages, 1)
    print(f"{total} samples; relay CPU {cpu_seconds:.2f} s for {messages} messages = {us_per_message:.0f} µs per message\n")
    print("| where | share | µs per message |")
    print("|---|---:|---:|")
    for side in ("user", "kernel"):
        part = sum(n for name, n in counts.items() if name.startswith(side))
        print(f"| **{side} total** | **{part / total * 100:.1f}%** | **{part / total * us_per_message:.0f}** |")
        for name, n in counts.most_common():
            if name.startswith(side):
                print(f"| {name.split(': ', 1)[1]} | {n / total * 100:.1f}% | {n / total * us_per_message:.1f} |")


if __name__ == "__main__":
    main()
