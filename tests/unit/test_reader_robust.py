"""Readers survive any arena: a damaged file, or one its owner is writing while they read.

1. Fuzz: copies of a real arena file (pools of every allocator in use, their counters published) with
   bytes, fields, offsets and lengths changed, or the file cut or extended, for a bounded time; for each,
   `nta attach` and `nta pool` (and the reader's page map, histogram and nta_check) run in a forked
   child, which must exit 0 or with one error line, never die of a signal or hang.
2. Stress: a reader process attaches, pins, reads and unpins fragments while the owner allocates and frees
   them as fast as it can; every pinned fragment's bytes stay as they were while pinned.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time

import numpy as np

from harness.nta import Arena, Pool
from tests.conftest import ROOT

FUZZ_SECONDS = float(os.environ.get("NTA_FUZZ_SECONDS", 12))
FUZZ_MIN = 50  # arenas at the least, however long a slower machine takes over them
CHILD_TIMEOUT = 10.0


def real_arena(path: str) -> bytes:
    """A real arena file as an owner leaves it mid-run: pools of each allocator holding fragments of
    packet sizes (some let go), counters published. Returns its bytes."""
    rng = np.random.default_rng(5)
    with Arena(path, max_pages=256, reserve_pages=8, unlink=False) as a:
        pools = [Pool(a, allocator=al, ifindex=3, queue=q, cache_size=8, refill=4)
                 for q, al in enumerate(("nta", "slab", "ppfrag", "page"))]
        held = []
        for p in pools:
            offs = p.alloc_frags(rng.choice([64, 576, 1500, 9000], size=40).astype(np.uint32)).tolist()
            for off in offs[::3]:
                p.put(off)
            held.append((p, [o for o in offs if o not in offs[::3]]))
            p.stats()  # publishes
        sizes = rng.integers(1, 3000, size=30)
        blocks = a.alloc_bulk(sizes)
        data = open(path, "rb").read()  # the file as a reader finds it, mid-run
        a.free_bulk(blocks, sizes)
        for p, offs in held:
            for off in offs:
                p.put(off)
            p.destroy()
    os.unlink(path)
    return data


def mutate(data: bytes, rng: random.Random, hdr_size: int) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # a few bytes anywhere in the metadata (header, descriptors, bitmaps, readers page)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(min(len(b), 1 << 20))] = rng.randrange(256)
    elif kind == 1:  # a 32-bit field of the header set to an extreme
        at = rng.randrange(0, hdr_size - 4, 4)
        struct.pack_into("<I", b, at, rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32)]))
    elif kind == 2:  # a 64-bit offset or size of the header
        at = rng.randrange(16, 160, 8)
        struct.pack_into("<Q", b, at, rng.choice([0, 1 << 40, rng.randrange(1 << 24), len(b) * 2]))
    elif kind == 3:  # cut short
        del b[rng.randrange(len(b)):]
    elif kind == 4:  # extended
        b += bytes(rng.randrange(1, 1 << 16))
    else:  # bytes changed inside the data region's metadata neighbours: descriptors and heap tables
        for _ in range(rng.randint(1, 32)):
            at = rng.randrange(hdr_size, min(len(b), hdr_size + (1 << 18)))
            b[at] ^= 1 << rng.randrange(8)
    return bytes(b)


def run_child(path: str, out_path: str) -> tuple[str, int | str, str]:
    """`nta attach PATH` and `nta pool PATH` in a forked child; returns (outcome, status, stderr)."""
    pid = os.fork()
    if pid == 0:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        # the real fds, not whatever the test runner put in sys.stdout and sys.stderr
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
        try:
            from harness.cli import main
            from harness.nta import Arena, ArenaError

            code = main(["attach", path]) or main(["pool", path])
            try:  # and what else a reader may call on it
                with Arena.attach(path) as a:
                    a.page_map()
                    a.free_histogram()
                    a.check()
            except ArenaError:
                pass
        except BaseException:
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 98)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hang", "-", ""
        time.sleep(0.002)
    text = open(out_path, errors="replace").read()
    if os.WIFSIGNALED(status):
        return "signal", signal.Signals(os.WTERMSIG(status)).name, text
    return ("ok" if os.WEXITSTATUS(status) == 0 else "error"), os.WEXITSTATUS(status), text


def test_readers_survive_damaged_arenas(tmp_path):
    src = str(tmp_path / "arena")
    data = real_arena(src)
    hdr_size = struct.unpack_from("<I", data, 8 + 4 * 12 + 8 * 7 + 4)[0]  # nta_hdr.hdr_size, after owner_pid
    assert 1024 < hdr_size < 1 << 20
    rng = random.Random(int(os.environ.get("NTA_FUZZ_SEED", 11)))
    outcomes: dict[str, int] = {}
    bad = []
    mutant, log = str(tmp_path / "mutant"), str(tmp_path / "out")
    start = time.monotonic()
    while time.monotonic() - start < FUZZ_SECONDS or sum(outcomes.values()) < FUZZ_MIN:
        with open(mutant, "wb") as f:
            f.write(mutate(data, rng, hdr_size))
        outcome, status, text = run_child(mutant, log)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        errors = [ln for ln in text.splitlines() if ln.startswith("nta: ")]
        if outcome in ("signal", "hang") or "Traceback" in text or status in (98, 99, 70) or \
                (outcome == "error" and len(errors) != 1):
            bad.append((outcome, status, text[-400:]))
            with open(str(tmp_path / f"bad-{len(bad)}"), "wb") as f:
                f.write(open(mutant, "rb").read())
    print(f"\nfuzzed {sum(outcomes.values())} arenas in {time.monotonic() - start:.1f} s: {outcomes}")
    assert not bad, f"{len(bad)} of {sum(outcomes.values())} mutants broke a reader: {bad[:3]}"


HELD = 600  # fragments the owner holds, let go oldest first: one stamped at generation G is let go by G + HELD + 8

STRESS_READER = r"""
import mmap, os, struct, sys, time
import numpy as np
from harness.nta import ArenaError, Reader

path, clock_path, seconds, held = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
r = Reader(path)
with open(clock_path, "r+b") as f:
    clock = mmap.mmap(f.fileno(), 8)
def now():
    return struct.unpack_from("<Q", clock, 0)[0]  # the last generation the owner finished stamping
data_off, size = r.data_off, r.size
pinned = stale = skipped = checked = 0
rng = np.random.default_rng(3)
t0 = time.monotonic()
while time.monotonic() - t0 < seconds:
    # candidates: chunk-aligned places holding a fragment's stamp (its own offset)
    base = data_off + int(rng.integers(0, (size - data_off) // 4096)) * 4096
    page = np.frombuffer(bytes(r.view(base, 4096)), dtype="<u4")
    for c in np.flatnonzero(page[0::8] == 0xA5A5F00D)[:4]:
        off = base + int(c) * 32
        try:
            r.pin(off)
        except ArenaError:
            stale += 1
            continue
        pinned += 1
        c0 = now()
        magic, gen, where, length = struct.unpack("<IIQI", bytes(r.view(off, 20)))
        # Only a fragment whose stamp is its own, complete, and still in the owner's window: then the
        # owner will let go of it (by generation gen + held + 8) while it stays pinned here.
        if magic != 0xA5A5F00D or where != off or not 20 <= length <= 9000 or not c0 - held + 16 <= gen <= c0:
            skipped += 1
            r.unpin(off)
            continue
        before = bytes(r.view(off, length))
        deadline = time.monotonic() + 5
        while now() < gen + held + 16 and time.monotonic() < deadline:
            time.sleep(0.0002)
        if now() < gen + held + 16:
            r.unpin(off)
            break  # the owner stopped: the run is ending
        after = bytes(r.view(off, length))  # let go of by its owner now, and still pinned
        if after != before or set(before[20:]) - {gen & 0xFF}:
            print(f"CHANGED {off} gen {gen} len {length} at {now()}", flush=True)
            sys.exit(3)
        checked += 1
        r.unpin(off)
r.close()
print(f"{pinned} {stale} {skipped} {checked}", flush=True)
"""


def test_a_reader_pins_while_the_owner_runs_flat_out(tmp_path):
    """The owner allocates, stamps and lets go of fragments as fast as it can; a reader process pins what
    it finds and, once the owner must have let go of the fragment, reads it again: not a byte changed
    (the free waited for the pin: nothing reused it). No crash on either side; the books balance."""
    path = f"/dev/shm/nta-stress-{os.getpid()}"
    clock_path = str(tmp_path / "clock")
    open(clock_path, "wb").write(bytes(8))
    seconds = 4.0
    sizes = np.array([64, 576, 1500, 64, 576, 64, 1500, 9000], dtype=np.uint32)
    import mmap

    with open(clock_path, "r+b") as f:
        clock = mmap.mmap(f.fileno(), 8)
    with Arena(path, max_pages=4096) as a, Pool(a, cache_size=64, refill=16) as p:
        reader = subprocess.Popen([sys.executable, "-c", STRESS_READER, path, clock_path, str(seconds), str(HELD)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        held: list[int] = []
        gen = allocs = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds + 1 and reader.poll() is None:
            offs = p.alloc_frags(sizes)
            for off, n in zip(offs.tolist(), sizes.tolist(), strict=True):
                gen += 1
                v = a.view(off, n)
                v[20:] = gen & 0xFF
                v[:20] = np.frombuffer(struct.pack("<IIQI", 0xA5A5F00D, gen, off, n), dtype=np.uint8)
                del v
            struct.pack_into("<Q", clock, 0, gen)  # stamped up to gen
            held.extend(offs.tolist())
            allocs += len(offs)
            while len(held) > HELD:
                p.put(held.pop(0))  # oldest first
        out, err = reader.communicate(timeout=30)
        for off in held:
            p.put(off)
        p.reap()
        p.check()
        a.check()
        pinned_left = p.stats()["pinned"]
    clock.close()
    assert reader.returncode == 0, (out, err)
    pinned, stale, skipped, checked = map(int, out.split())
    print(f"\nowner: {allocs} fragments in {seconds + 1:g} s; reader: {pinned} pinned ({checked} read again after "
          f"their owner let go: unchanged; {skipped} not checkable), {stale} gone before the pin took")
    assert allocs > 10_000 and checked > 20 and pinned_left == 0
    assert not os.path.exists(path)


def test_a_torn_pool_slot_is_reported_not_waited_for(tmp_path):
    """A pool's owner that died while publishing leaves its slot's sequence odd: 'nta pool' still answers,
    and says the figures are torn."""
    path = str(tmp_path / "arena")
    with Arena(path, max_pages=64, unlink=False) as a, Pool(a, ifindex=7) as p:
        off = p.alloc_frag(100)
        p.stats()
        data = bytearray(open(path, "rb").read())
        p.put(off)
    os.unlink(path)
    readers_off = struct.unpack_from("<Q", data, 104)[0]  # nta_hdr.readers_off
    struct.pack_into("<I", data, readers_off + 8, 3)  # pools[0].seq: odd, for ever
    torn = str(tmp_path / "torn")
    open(torn, "wb").write(bytes(data))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness", "pool", torn, "--json", "-"], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 10
    (info,) = json.loads(proc.stdout)["pools"]
    assert info["ifindex"] == 7 and info["torn"] is True
    assert "torn" in subprocess.run([sys.executable, "-m", "harness", "pool", torn], capture_output=True,
                                    text=True, timeout=30, cwd=ROOT).stdout

