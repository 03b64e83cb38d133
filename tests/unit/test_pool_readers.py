"""The page pool shared with other processes: a reader's pins, stale pins, an arena's file gone on error,
and 'nta pool' and 'nta attach' inspecting a live pool from another process."""

import errno
import os

import numpy as np
import pytest

from harness.nta import Arena, ArenaError, Pool

READER = """
import os
import sys
from harness.nta import Reader
r = Reader(sys.argv[1])
off, n = int(sys.argv[2]), int(sys.argv[3])
r.pin(off)
sys.stdout.buffer.write(bytes(r.view(off, n)))
sys.stdout.flush()
os.close(1)                   # EOF for the parent (sys.stdout.close() leaves fd 1 open)
sys.stdin.read()              # until told to go on
if sys.argv[4] == "unpin":
    r.unpin(off)
    r.close()
"""


@pytest.mark.parametrize("ending", ["unpin", "killed"])
def test_a_reader_process_pins_then_unpins_or_dies(tmp_path, ending):
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = f"/dev/shm/nta-test-reader-{os.getpid()}"
    with Arena(path, max_pages=64) as a, Pool(a) as p:
        off = p.alloc_frag(1514)
        frame = os.urandom(1514)
        a.view(off, 1514)[:] = np.frombuffer(frame, dtype=np.uint8)
        child = subprocess.Popen([sys.executable, "-c", READER, path, str(off), "1514", ending], cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout.read() == frame  # read in place by the other process, pinned
        p.put(off)
        assert p.stats()["pinned"] == 1 and p.reap() == 0
        other = p.alloc_frag(1514)
        assert other != off  # the pinned chunks are not handed out again
        p.put(other)
        if ending == "killed":
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        else:
            child.stdin.close()
            assert child.wait(timeout=30) == 0, child.stderr.read()
        assert p.reap() == 1
        s = p.stats()
        assert s["pinned"] == 0 and s["readers_reclaimed"] == (1 if ending == "killed" else 0)
        p.check()
        a.check()
    assert not os.path.exists(path)


def test_pin_after_free_is_stale():
    from harness.nta import Reader

    path = f"/dev/shm/nta-test-stale-{os.getpid()}"
    with Arena(path, max_pages=16) as a, Pool(a) as p, Reader(path) as r:
        off = p.alloc_frag(100)
        p.put(off)
        with pytest.raises(ArenaError, match="freed before the pin took") as ei:
            r.pin(off)
        assert ei.value.errno == errno.ESTALE
        with pytest.raises(ArenaError, match="not pinned"):
            r.unpin(off)
        live = [p.alloc_frag(64) for _ in range(3)]
        p.put(live[1])
        res = r.pin_many(live + [3])
        assert res.tolist() == [0, -errno.ESTALE, 0, -errno.EINVAL]
        p.put(live[0])
        assert p.stats()["pinned"] == 1  # the pinned one waits; live[1] was never pinned
        r.unpin(live[0])
        assert p.reap() == 1
        p.put(live[2])
        assert p.reap() == 0  # still pinned
        r.unpin(live[2])
        assert p.reap() == 1
        p.check()


def test_an_error_inside_leaves_no_file_behind():
    path = f"/dev/shm/nta-test-error-{os.getpid()}"
    with pytest.raises(RuntimeError, match="boom"):
        with Arena(path, max_pages=16) as a, Pool(a) as p:
            p.alloc_frag(100)  # still held when the error strikes
            view = a.view(a.data_off, 10)  # and a view alive
            raise RuntimeError("boom")
    del view
    assert not os.path.exists(path)


def test_nta_pool_and_attach_inspect_from_another_process(tmp_path):
    import json

    from tests.conftest import assert_one_line_error, nta

    path = f"/dev/shm/nta-test-inspect-{os.getpid()}"
    with Arena(path, max_pages=256) as a:
        with Pool(a, ifindex=7, queue=2) as p, Pool(a, ifindex=7, queue=3) as q:
            p.put(p.alloc_page())
            frags = q.alloc_frags(np.full(10, 576, dtype=np.uint32))
            p.stats()  # publishing happens on stats, refill, reap and destroy
            q.stats()
            out = nta("pool", path, check=True).stdout
            assert "2 pools" in out and "if 7 q 2" in out and "if 7 q 3" in out
            assert "alloc.fast" in out and "recycle.cached" in out
            doc_file = tmp_path / "pools.json"
            nta("pool", path, "--json", str(doc_file), check=True)
            doc = {d["queue"]: d for d in json.loads(doc_file.read_text())["pools"]}
            assert doc[2]["pid"] == os.getpid() and doc[2]["ifindex"] == 7
            assert (doc[2]["stats"]["slow"], doc[2]["stats"]["cached"]) == (1, 1)
            assert doc[3]["stats"]["frags"] == 10 and doc[3]["stats"]["frag_bytes"] == 10 * 576
            st = json.loads(nta("attach", path, "--json", "-", check=True).stdout)
            assert st["kind"] == "nta" and st["stats"]["pages_in_use"] == a.stats()["pages_in_use"]
            q.put_bulk(frags)
        # both destroyed: their slots are free again
        assert nta("pool", path, check=True).stdout.strip() == f"{path}: no pools"
    assert_one_line_error(nta("pool", "/dev/shm/nta-no-such-arena"), "No such file")
    assert_one_line_error(nta("attach", str(tmp_path)), "attaching")
