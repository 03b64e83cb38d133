"""The arena from Python: geometry, shared memory, a reader process, views, page map, errors."""

import errno
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from harness.nta import CELLS, Arena, ArenaCorrupt, ArenaError
from tests.conftest import ROOT


@pytest.fixture
def shm_path():
    path = f"/dev/shm/nta-test-{os.getpid()}"
    yield path
    assert not os.path.exists(path), "the arena's file was left behind"


@pytest.mark.parametrize("kw", [dict(page_size=3000), dict(chunk_size=8), dict(chunk_size=48),
                                dict(page_size=65536, chunk_size=16), dict(reserve_pages=64),
                                dict(kind="buddy"), dict(max_pages=0)])
def test_bad_geometry(kw):
    args = {"max_pages": 64, **kw}
    with pytest.raises(ArenaError) as ei:
        Arena(**args)
    assert ei.value.errno == errno.EINVAL


def test_geometry_and_exact_sizes():
    for chunk in (32, 64):
        with Arena(max_pages=8, chunk_size=chunk) as a:
            assert a.chunks_per_page == 4096 // chunk
            off = a.alloc(1514)
            assert a.stats()["bytes_handed"] == -(-1514 // chunk) * chunk
            row = a.page_map(1)[0]
            assert (row[: -(-1514 // chunk)] == CELLS["used"]).all()
            assert (row[-(-1514 // chunk):] == CELLS["free"]).all()
            a.free(off, 1514)  # parked in the size cache, not yet combined
            row = a.page_map(1)[0]
            assert (row[: -(-1514 // chunk)] == CELLS["cached"]).all()
            a.cache_flush()
            assert a.page_map(1)[0].tolist() == [CELLS["free"]] * a.chunks_per_page
            assert a.stats()["pages_in_use"] == 0


def test_errors_carry_errno_and_say_where():
    with Arena(max_pages=8, cache_depth=0) as a:
        off = a.alloc(100)
        cases = [((off + 32, 100), errno.ENOENT, "no live block starts at offset"),
                 ((off, 500), errno.ERANGE, "size 500 does not match"),
                 ((off + 1, 100), errno.EINVAL, "is not a chunk")]
        for args, code, text in cases:
            with pytest.raises(ArenaError) as ei:
                a.free(*args)
            assert ei.value.errno == code and text in str(ei.value) and str(args[0]) in str(ei.value)
        a.free(off, 100)
        with pytest.raises(ArenaError, match="double free") as ei:
            a.free(off, 100)
        assert ei.value.errno == errno.EALREADY
        with pytest.raises(ArenaError, match="out of memory"):
            a.alloc(9 * 4096)
        a.check()


def test_bulk_calls_and_their_errors():
    with Arena(max_pages=256) as a:
        sizes = np.tile(np.array([64, 576, 1500], dtype=np.uint32), 100)
        offs = a.alloc_bulk(sizes)
        assert (offs > 0).all() and len(set(offs.tolist())) == 300
        assert a.stats()["live_allocs"] == 300
        bad = offs.copy()
        bad[7] += 32  # inside a block
        with pytest.raises(ArenaError, match="entry 7: no live block starts"):
            a.free_bulk(bad, sizes)
        # every good entry was freed; entry 7 changed nothing
        assert a.stats()["live_allocs"] == 1
        a.free(int(offs[7]), int(sizes[7]))
        a.check()
        tiny = Arena(max_pages=1, cache_depth=0)
        got = tiny.alloc_bulk(np.full(5, 1500, dtype=np.uint32))
        assert (got > 0).sum() == 2 and (got == 0).sum() == 3  # two fit a page; the rest fail, marked 0
        tiny.close()


def test_views_are_the_memory_and_outlive_nothing():
    a = Arena(max_pages=8)
    off = a.alloc(64)
    v = a.view(off, 64)
    v[:] = np.arange(64, dtype=np.uint8)
    assert bytes(a.view(off, 64)) == bytes(range(64))
    with pytest.raises(ArenaError) as ei:
        a.close()
    assert ei.value.errno == errno.EBUSY
    del v
    a.close()
    assert a.closed
    with pytest.raises(ArenaError, match="closed"):
        a.alloc(1)


def test_shared_file_and_a_reader_process(shm_path):
    with Arena(shm_path, max_pages=32) as a:
        st = os.stat(shm_path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        off = a.alloc(1500)
        a.view(off, 1500)[:] = np.frombuffer(os.urandom(1500), dtype=np.uint8)
        want = bytes(a.view(off, 1500))
        code = f"""
import sys
from harness.nta import Arena, ArenaError
with Arena.attach({shm_path!r}) as r:
    v = r.view({off}, 1500)
    sys.stdout.buffer.write(bytes(v))
    r.check()
    assert r.stats()["live_allocs"] == 1
    try:
        r.alloc(10)
    except ArenaError as e:
        assert e.errno == 30, e  # EROFS
    else:
        raise SystemExit("a read-only reader could allocate")
    assert not v.flags.writeable
    del v
"""
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout == want
    assert not os.path.exists(shm_path)


def test_attach_refuses_what_is_not_an_arena(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 10000)
    with pytest.raises(ArenaError) as ei:
        Arena.attach(str(junk))
    assert ei.value.errno == errno.EBADMSG and "not an NTA arena" in str(ei.value)
    with pytest.raises(ArenaError) as ei:
        Arena.attach(str(tmp_path / "missing"))
    assert ei.value.errno == errno.ENOENT


def test_existing_path_is_not_overwritten(shm_path):
    with Arena(shm_path, max_pages=4):
        with pytest.raises(ArenaError, match="already exists") as ei:
            Arena(shm_path, max_pages=4)
        assert ei.value.errno == errno.EEXIST


def test_check_raises_on_damage(shm_path):
    """A second mapping of the file damages a counter; check() names it."""
    with Arena(shm_path, max_pages=8) as a:
        for _ in range(1001):  # counters with values found nowhere else in the header
            a.free(a.alloc(100), 100)
        a.alloc(100)
        for _ in range(3):
            with pytest.raises(ArenaError):
                a.free(a.data_off + 1, 100)
        a.check()
        # live_allocs sits in the stats block of the header; find it by its value and change it
        import mmap
        import struct
        with open(shm_path, "r+b") as f, mmap.mmap(f.fileno(), a.data_off) as mm:
            stats = a.stats()
            # allocs, frees, alloc_fails, bad_frees: live blocks are allocs - frees
            needle = struct.pack("<QQQQ", stats["allocs"], stats["frees"], stats["alloc_fails"],
                                 stats["bad_frees"])
            at = mm.find(needle)
            assert at > 0
            mm[at:at + 8] = struct.pack("<Q", stats["allocs"] + 5)
        with pytest.raises(ArenaCorrupt, match="counter live_allocs is 6, the arena holds 1") as ei:
            a.check()
        assert ei.value.errno == errno.EUCLEAN


def test_trim_hands_memory_back():
    with Arena(max_pages=64, cache_depth=0) as a:
        offs = [a.alloc(4096) for _ in range(32)]
        for off in offs[:16]:
            a.free(off, 4096)
        assert a.trim() == 16
        s = a.stats()
        assert s["pages_committed"] == 16 and s["pages_trimmed"] == 16
        assert (a.page_map(32)[:16] == CELLS["untouched"]).all()
        a.check()


def test_free_histogram():
    with Arena(max_pages=8, cache_depth=0) as a:
        x = [a.alloc(1024) for _ in range(4)]
        a.free(x[1], 1024)
        a.free(x[3], 1024)
        hist, runs = a.free_histogram()
        assert hist[32] == 2 and hist.sum() == 2 and runs == 0
