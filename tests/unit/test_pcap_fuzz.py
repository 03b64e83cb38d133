"""The capture reader against mutants of real captures: every one loads, or is refused with the one-line
CaptureError naming the file; never another exception, a hang, or memory without bound.

The mutants (bytes flipped, length fields set to extremes, blocks cut, repeated or dropped, the file cut)
are read in a child process with its address space limited and an alarm on each, for a bounded time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

FUZZ_SECONDS = float(os.environ.get("NTA_FUZZ_SECONDS", 12))
SOURCES = ["tcpreplay-test.pcap", "pcpp-pcapng-example.pcapng", "tcpdump-handshake-nano-sll.pcap",
           "suricata-datasets06-vlan.pcap", "pcpp-raw-ip.pcap", "tcpdump-empty.pcapng"]

CHILD = r"""
import json, os, random, resource, signal, struct, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from harness.errors import NtaError
from harness.pcapfile import CaptureError, load

sources, workdir, seconds, seed = sys.argv[1].split(","), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
blobs = [open(p, "rb").read() for p in sources]
rng = random.Random(seed)

def mutate(b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        if not b:
            break
        if kind == 0:
            for _ in range(rng.randint(1, 16)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 1 and len(b) > 8:  # a 32-bit length or count set to an extreme, on a 4-byte boundary
            at = rng.randrange(0, len(b) - 4) & ~3
            struct.pack_into(rng.choice("<>") + "I", b, at,
                             rng.choice([0, 1, 12, 0xFFFFFFFF, 0x7FFFFFFF, 262145, rng.randrange(1 << 32)]))
        elif kind == 2:
            del b[rng.randrange(len(b)):]
        elif kind == 3:  # a run of bytes repeated
            at = rng.randrange(len(b))
            n = rng.randint(1, 2048)
            b[at:at] = b[at:at + n] * rng.randint(1, 4)
        elif kind == 4:  # a run dropped
            at = rng.randrange(len(b))
            del b[at:at + rng.randint(1, 512)]
        elif kind == 5:  # the file header's fields
            at = rng.randrange(0, min(len(b), 32))
            b[at] ^= 1 << rng.randrange(8)
        else:  # zeros inserted
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randint(1, 64))
    return bytes(b)

def alarm(signum, frame):
    raise TimeoutError("hang")

signal.signal(signal.SIGALRM, alarm)
counts = {"loaded": 0, "refused": 0}
bad = []
path = os.path.join(workdir, "mutant.pcap")
t0 = time.monotonic()
while time.monotonic() - t0 < seconds:
    data = mutate(rng.choice(blobs))
    with open(path, "wb") as f:
        f.write(data)
    signal.alarm(5)
    try:
        cap = load(path)
        counts["loaded"] += 1
        assert cap.frames == len(cap.lengths) <= cap.packets and int(cap.lengths.sum()) == cap.frame_bytes
    except CaptureError as exc:
        msg = str(exc)
        counts["refused"] += 1
        if "\n" in msg or not msg.startswith(path):
            bad.append(("message", msg))
    except BaseException as exc:
        bad.append((type(exc).__name__, str(exc)[:200]))
        open(os.path.join(workdir, f"bad-{len(bad)}.pcap"), "wb").write(data)
    finally:
        signal.alarm(0)
print(json.dumps({"counts": counts, "bad": bad[:5], "nbad": len(bad)}))
"""


def test_mutated_captures_load_or_are_refused_in_one_line(pcaps, tmp_path):
    sources = ",".join(os.path.join(pcaps, n) for n in SOURCES)
    proc = subprocess.run([sys.executable, "-c", CHILD, sources, str(tmp_path), str(FUZZ_SECONDS),
                           os.environ.get("NTA_FUZZ_SEED", "7")], capture_output=True, text=True, cwd=ROOT,
                          timeout=FUZZ_SECONDS + 120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    counts = doc["counts"]
    print(f"\nfuzzed {sum(counts.values())} captures in {FUZZ_SECONDS:g} s: {counts}")
    assert counts["loaded"] > 50 and counts["refused"] > 50
    assert doc["nbad"] == 0, doc["bad"]
