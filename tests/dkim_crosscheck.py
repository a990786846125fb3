#!/usr/bin/env python3
"""Cross-checks corerelay's DKIM signatures with an independent verifier, dkimpy.

Not run by cargo. Usage:

    pip install dkimpy pynacl
    mkdir -p /tmp/dkim-out
    CORERELAY_DKIM_EXPORT_DIR=/tmp/dkim-out cargo test --lib dkim_signatures_over_the_output_chunks_verify
    python3 tests/dkim_crosscheck.py /tmp/dkim-out

The test writes every rewritten fixture signed with RSA-2048 and Ed25519 (two
DKIM-Signature fields) and the DNS records of both keys; this script verifies every
signature of every message against those records and exits non-zero on any failure.
"""

import pathlib
import sys

import dkim


def main(directory: str) -> int:
    root = pathlib.Path(directory)
    records = {}
    for line in (root / "keys.txt").read_text().splitlines():
        name, record = line.split(" ", 1)
        records[name + "."] = record.encode()

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return records.get(name if name.endswith(".") else name + ".")

    failures = 0
    messages = sorted(root.glob("*.signed"))
    for path in messages:
        message = path.read_bytes()
        verifier = dkim.DKIM(message)
        for index in range(2):
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            print(f"{'pass' if ok else 'FAIL'}  {path.name} signature {index}")
            failures += 0 if ok else 1
    print(f"{len(messages) * 2 - failures} passed, {failures} failed")
    return 1 if failures or not messages else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dkim-out"))
