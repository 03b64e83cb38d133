"""The page pool from Python, and a hypothesis model of get/put/alloc against its counters."""

import errno
import os
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from harness.nta import Arena, ArenaError, Pool, PoolBusy


def test_kernel_defaults_and_names():
    with Arena(max_pages=256) as a, Pool(a) as p:
        s = p.stats()
        for name in ("fast", "slow", "slow_high_order", "empty", "refill", "waive", "cached", "cache_full",
                     "ring", "ring_full", "released_refcnt", "maps", "unmaps", "hold", "release", "inflight"):
            assert name in s
        x = p.alloc_page()
        s = p.stats()
        # 64 pages (refill) from the arena at once
        assert (s["slow"], s["empty"], s["maps"], s["cache_len"]) == (1, 1, 64, 63)
        p.put(x)
        assert p.stats()["cached"] == 1


def test_batch_destructor_steal_recycle_release():
    with Arena(max_pages=64) as a, Pool(a, refill=1, batch_destructor=True) as p:
        pages = [p.alloc_page() for _ in range(3)]
        for x in pages:
            p.put(x)
        waiting = p.destructed()
        assert waiting.tolist() == pages
        with pytest.raises(ArenaError, match="put below zero") as ei:
            p.put(pages[0])
        assert ei.value.errno == errno.EALREADY
        p.judge(waiting, ["recycle", "steal", "release"])
        s = p.stats()
        assert (s["cached"], s["dtor_steal"], s["dtor_release"], s["dtor_pending"]) == (1, 1, 1, 0)
        p.put(pages[1])  # the stolen page came back with one reference
        p.judge(p.destructed(), "release")
        p.check()


def test_remote_puts_from_another_thread():
    with Arena(max_pages=256) as a, Pool(a) as p:
        offs = p.alloc_frags(np.full(200, 700, dtype=np.uint32))
        t = threading.Thread(target=lambda: [p.put_remote(int(o)) for o in offs])
        t.start()
        t.join()
        assert p.stats()["frags"] == 200  # queued, not applied
        before = p.stats()
        assert p.drain_remote() == 200
        s = p.stats()
        assert s["frags"] == 0
        # applied in the owner's context: the pages they empty go to the alloc cache, hot, not the ring
        emptied = (s["cached"] + s["ring"]) - (before["cached"] + before["ring"])
        assert emptied > 0 and s["ring"] == before["ring"] and s["cache_len"] >= emptied
        p.check()


def test_remote_batches_from_threads_are_posted_whole_or_refused():
    """Four threads post a batch at a time into a 64-slot queue: a batch with no room is refused whole
    (and counted) and posted again once the owner has drained; every put is applied exactly once."""
    with Arena(max_pages=1024) as a, Pool(a, remote_size=64) as p:
        offs = p.alloc_frags(np.full(4000, 300, dtype=np.uint32))
        parts = np.array_split(offs, 4)
        refused = [0] * 4

        def post(i):
            for batch in np.array_split(parts[i], 50):  # 20 a batch
                while not p.put_remote_bulk(batch):
                    refused[i] += 1
                    time.sleep(0)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            p.drain_remote()
        p.drain_remote()
        s = p.stats()
        assert (s["posted"], s["applied"], s["bad"], s["pending"], s["batches"]) == (4000, 4000, 0, 0, 200)
        assert s["full"] == sum(refused) and s["frags"] == 0 and 0 < s["max_wait_ns"] < 60e9
        assert p.put_remote_bulk(np.zeros(0, dtype=np.int64)) and p.stats()["posted"] == 4000  # nothing to post
        p.check()


def test_a_full_queue_refuses_and_an_allocation_applies_it():
    with Arena(max_pages=64) as a, Pool(a, remote_size=4) as p:
        offs = [p.alloc_frag(100) for _ in range(5)]
        assert [p.put_remote(o) for o in offs] == [True] * 4 + [False]
        with pytest.raises(ArenaError, match="put_remote_bulk of 5"):
            p.put_remote_bulk(np.array(offs))  # larger than the queue: EINVAL
        assert p.stats()["pending"] == 4 and p.stats()["frags"] == 5
        last = p.alloc_frag(100)  # the owner's next allocation applies what was posted
        assert p.stats()["pending"] == 0 and p.stats()["frags"] == 2
        p.check()
        p.put(offs[4])
        p.put(last)


def test_destroy_refuses_then_waits():
    a = Arena(max_pages=64)
    p = Pool(a, refill=2)
    x = p.alloc_page()
    with pytest.raises(PoolBusy) as ei:
        p.destroy()
    assert ei.value.pages == [x] and ei.value.count == 1 and ei.value.errno == errno.EBUSY
    with pytest.raises(ArenaError, match="pools still use this arena"):
        a.close()
    threading.Timer(0.05, lambda: p.put_remote(x)).start()
    p.destroy(timeout=5)
    a.close()


def test_reserve_only_when_asked_and_never_recycled():
    with Arena(max_pages=6, reserve_pages=2, cache_depth=0) as a, Pool(a, refill=1, cache_size=8) as p:
        held = [p.alloc_page() for _ in range(4)]
        with pytest.raises(ArenaError, match="out of memory"):
            p.alloc_page()
        r = p.alloc_page(reserve=True)
        assert p.stats()["reserve_pages"] == 1
        p.put(r)
        assert p.stats()["reserve_pages"] == 0 and p.stats()["cache_len"] == 0
        with pytest.raises(ArenaError):
            p.alloc_page()  # the reserve page did not become an ordinary one
        for x in held:
            p.put(x)
        p.check()
        a.check()


def test_frags_hold_packet_bytes():
    with Arena(max_pages=64) as a, Pool(a) as p:
        frame = np.frombuffer(os.urandom(1514), dtype=np.uint8)
        off = p.alloc_frag(1514)
        a.view(off, 1514)[:] = frame
        other = p.alloc_frag(64)
        a.view(other, 64)[:] = 0xEE
        assert (a.view(off, 1514) == frame).all()
        p.put(off)
        p.put(other)


SIZES = st.one_of(st.sampled_from([64, 576, 1500, 1514, 60]), st.integers(1, 4096), st.integers(4097, 20000))
PAGE = 4096
REMOTE_QUEUE = 4  # posts the pool's remote queue holds: full often
# pages a pool's ordinary heap may keep with nothing in them: the NTA its last page, ppfrag its current one,
# slab an empty slab a class (32 to 4096 bytes: 8 classes); its reserve heap keeps nothing
KEPT = {"nta": 1, "ppfrag": 1, "slab": 8, "page": 0}
RESERVE = 8  # the arena's reserve pages


def handed(allocator: str, size: int) -> int:
    """The bytes a fragment of ``size`` takes under each allocator (0: a whole page from alloc_page)."""
    if size == 0:
        return PAGE
    if size > PAGE:
        pages = -(-size // PAGE)
        return (1 << (pages - 1).bit_length() if allocator == "slab" else pages) * PAGE
    if allocator == "slab":
        return max(1 << (size - 1).bit_length(), 32)
    if allocator == "page":
        return PAGE
    return -(-size // 32) * 32  # nta, ppfrag: exact chunks


class PoolModel(RuleBasedStateMachine):
    """Holders per offset, as the model sees them, under each of the four allocators; after every step
    the pool's and the arena's books checked, the fragments' counts and bytes as the allocator hands them
    out, no two live fragments overlapping, each one's bytes as written, and the pages in use exact.

    Two threads' worth of interleavings: a put may be posted as another thread would (alone, or a batch
    of them at once, into a queue of 4 that is often full), and stays posted, the fragment still held,
    until the owner's next allocation or drain applies it; the model's steps interleave posts with the
    owner's calls in any order. (Threads really racing are test_remote.c's, under ThreadSanitizer.)

    Memory at the limit: a budget of ordinary pages (none, or few enough that allocations fail), the
    arena's reserve apart from it: an allocation not permitted the reserve never takes it, one that is
    takes it only when ordinary memory is out, and what is taken from it is given back."""

    @initialize(cache=st.sampled_from([2, 8, 128]), ring=st.sampled_from([2, 16, 1024]),
                allocator=st.sampled_from(["nta", "slab", "ppfrag", "page"]), budget=st.sampled_from([0, 6, 24]))
    def make(self, cache, ring, allocator, budget):
        self.allocator, self.budget = allocator, budget
        self.arena = Arena(max_pages=160, reserve_pages=RESERVE)
        self.pool = Pool(self.arena, cache_size=cache, refill=min(cache, 4), ring_size=ring,
                         allocator=allocator, remote_size=REMOTE_QUEUE, budget=budget)
        self.refs: dict[int, int] = {}  # holders, counting puts posted and not yet applied
        self.posted: list[int] = []  # offsets of puts posted, in order, not yet applied
        self.applied = 0
        self.sizes: dict[int, int] = {}  # offset -> size asked (0 for whole pages)
        self.fill: dict[int, int] = {}  # offset -> the byte written over it

    def teardown(self):
        if hasattr(self, "pool"):
            self.drain()
            for off, n in list(self.refs.items()):
                for _ in range(n):
                    self.pool.put(off)
            self.pool.check()
            self.arena.check()
            s = self.pool.stats()
            assert s["pages_in_use"] <= KEPT[self.allocator]
            # bean counting: every page taken from the reserve was given back, the moment it emptied
            assert s["reserve_taken"] == s["reserve_returned"] and s["reserve_pages"] == 0
            self.pool.destroy()
            assert self.arena.stats()["pages_in_use"] == 0  # every page back in the arena
            self.arena.close()

    def _applied(self):
        """The owner applied every posted put (an allocation or drain does)."""
        for off in self.posted:
            self._let_go(off)
        self.applied += len(self.posted)
        self.posted = []

    def _let_go(self, off):
        self.refs[off] -= 1
        if not self.refs[off]:
            del self.refs[off], self.sizes[off], self.fill[off]

    def _own(self) -> list[int]:
        """Offsets with a holder whose put is not posted yet."""
        return sorted(o for o, n in self.refs.items() if n > self.posted.count(o))

    def _took(self, off, size):
        assert off not in self.refs
        self.refs[off], self.sizes[off] = 1, size
        self.fill[off] = (off // 32) & 0xFF
        self.arena.view(off, max(size, 1) if size else PAGE)[:] = self.fill[off]

    def _reserve_rule(self, before: dict, reserve: bool, ok: bool) -> None:
        """The reserve only with permission; exhausted counted only when it was asked and had no room."""
        s = self.pool.stats()
        took = s["reserve_allocs"] - before["reserve_allocs"]
        assert took == 0 or (reserve and ok and took == 1), (reserve, ok, took)
        assert s["reserve_exhausted"] - before["reserve_exhausted"] == (reserve and not ok)
        event("the reserve taken" if took else "out of memory" if not ok else "ordinary memory")

    @rule(size=SIZES, reserve=st.booleans())
    def alloc_frag(self, size, reserve):
        before = self.pool.stats()
        try:
            off = self.pool.alloc_frag(size, reserve=reserve)
        except ArenaError as e:
            assert e.errno == errno.ENOMEM
            self._applied()  # before it found no room
            self._reserve_rule(before, reserve, False)
            return
        self._applied()
        self._reserve_rule(before, reserve, True)
        self._took(off, size)
        if self.pool.stats()["reserve_allocs"] > before["reserve_allocs"]:  # only once ordinary memory is out
            with pytest.raises(ArenaError):
                self.pool.alloc_frag(size)

    @rule(reserve=st.booleans())
    def alloc_page(self, reserve):
        before = self.pool.stats()
        try:
            off = self.pool.alloc_page(reserve=reserve)
        except ArenaError as e:
            assert e.errno == errno.ENOMEM
            self._applied()
            self._reserve_rule(before, reserve, False)
            return
        self._applied()
        self._reserve_rule(before, reserve, True)
        assert off % PAGE == self.arena.data_off % PAGE
        self._took(off, 0)
        if self.pool.stats()["reserve_allocs"] > before["reserve_allocs"]:  # only once ordinary memory is out
            with pytest.raises(ArenaError):
                self.pool.alloc_page()

    @precondition(lambda self: self._own())
    @rule(data=st.data())
    def get(self, data):
        off = data.draw(st.sampled_from(self._own()))
        self.pool.get(off)
        self.refs[off] += 1

    @precondition(lambda self: self._own())
    @rule(data=st.data(), direct=st.booleans())
    def put(self, data, direct):
        off = data.draw(st.sampled_from(self._own()))
        size = self.sizes[off]
        assert (self.arena.view(off, size or PAGE) == self.fill[off]).all(), "a live fragment was overwritten"
        self.pool.put(off, direct=direct)
        self._let_go(off)

    @precondition(lambda self: self._own())
    @rule(data=st.data(), n=st.integers(1, REMOTE_QUEUE + 1))
    def post(self, data, n):
        """Another thread's put of n holders, posted as one batch: all of it, or (no room) none."""
        own = self._own()
        offs = data.draw(st.lists(st.sampled_from(own), min_size=1, max_size=n))
        offs = [o for i, o in enumerate(offs) if offs[:i + 1].count(o) <= self.refs[o] - self.posted.count(o)]
        room = REMOTE_QUEUE - len(self.posted)
        if len(offs) > REMOTE_QUEUE:
            with pytest.raises(ArenaError):
                self.pool.put_remote_bulk(np.array(offs))
            return
        took = self.pool.put_remote_bulk(np.array(offs)) if len(offs) > 1 else self.pool.put_remote(offs[0])
        assert took == (len(offs) <= room)
        if took:
            self.posted += offs

    @rule()
    def drain(self):
        assert self.pool.drain_remote() == len(self.posted)
        self._applied()

    @precondition(lambda self: [o for o in self._own() if 0 < self.sizes[o]])
    @rule(data=st.data(), size=SIZES)
    def trim(self, data, size):
        """A receive buffer cut to its frame: the NTA gives the tail back; no other allocator can."""
        off = data.draw(st.sampled_from([o for o in self._own() if 0 < self.sizes[o]]))
        if self.allocator != "nta" or self.sizes[off] > PAGE:
            with pytest.raises(ArenaError) as ei:
                self.pool.trim(off, size)
            assert ei.value.errno == errno.EOPNOTSUPP
            return
        before = handed("nta", self.sizes[off])
        now = self.pool.trim(off, size)
        if handed("nta", size) < before:
            self.sizes[off] = size
        assert now == handed("nta", self.sizes[off])

    @precondition(lambda self: [o for o in self.refs if 0 < self.sizes[o]])
    @rule(data=st.data())
    def cut(self, data):
        """An aligned page's buffer cut to its frame, head and tail back: the NTA's only, with one holder, within
        the block, after the puts other threads posted (its last holder's too: then nobody holds it); anything
        else refused with nothing else changed."""
        off = data.draw(st.sampled_from(sorted(o for o in self.refs if 0 < self.sizes[o])))
        asked, block = self.sizes[off], handed(self.allocator, self.sizes[off])
        posted = bool(self.posted)
        self._applied()  # the cut applies what was posted first (checked after it: nothing left to drain)
        if off not in self.refs:
            with pytest.raises(ArenaError) as ei:
                self.pool.cut(off, 0, 1)
            assert ei.value.errno in (errno.EALREADY, errno.ENOENT)
            assert self.pool.drain_remote() == 0
            event("cut refused: its last holder's put was posted")
            return
        head = 32 * data.draw(st.integers(0, (block - 1) // 32))
        size = data.draw(st.integers(1, max(1, asked - head)) if head < asked else st.integers(1, block))
        if self.allocator != "nta" or asked > PAGE:
            want = errno.EOPNOTSUPP
        elif head + handed("nta", size) > block:
            want = errno.EINVAL
        elif head and self.refs[off] > 1:
            want = errno.EBUSY
        else:
            want = 0
        before = self.pool.stats()  # with puts posted, before the cut applies them
        if want:
            with pytest.raises(ArenaError) as ei:
                self.pool.cut(off, head, size)
            assert ei.value.errno == want
            assert posted or self.pool.stats() == before
            assert self.pool.drain_remote() == 0
            event(f"cut refused: {errno.errorcode[want]}")
            return
        assert self.pool.cut(off, head, size) == off + head
        assert self.pool.drain_remote() == 0
        refs, fill = self.refs[off], self.fill[off]
        del self.refs[off], self.sizes[off], self.fill[off]
        new = off + head
        self.refs[new], self.fill[new] = refs, fill
        self.sizes[new] = size if handed("nta", size) < block - head else block - head
        self.arena.view(new, self.sizes[new])[:] = fill  # its holder writes its frame (bytes never asked for before)
        event("cut, head" if head else "cut, tail only")
        gave = block - handed("nta", self.sizes[new])
        assert self.pool.stats()["trimmed_bytes"] - before["trimmed_bytes"] == gave

    @rule(data=st.data())
    def put_below_zero(self, data):
        gone = [o for o in getattr(self, "gone", []) if o not in self.refs]
        if not gone:
            return
        off = data.draw(st.sampled_from(gone))
        before = self.pool.stats()
        with pytest.raises(ArenaError) as ei:
            self.pool.put(off)
        assert ei.value.errno in (errno.EALREADY, errno.ENOENT)
        assert self.pool.stats() == before

    @invariant()
    def books_balance(self):
        if not hasattr(self, "pool"):
            return
        self.gone = list(set(getattr(self, "gone", [])) | set(self.refs))[-50:]
        self.pool.check()  # with the posted puts: none for more holders than a fragment has
        self.arena.check()
        s = self.pool.stats()
        assert (s["pending"], s["applied"], s["bad"]) == (len(self.posted), self.applied, 0)
        assert s["posted"] == self.applied + len(self.posted)
        frags = {o: handed(self.allocator, z) for o, z in self.sizes.items() if z}
        assert s["frags"] == len(frags)
        assert s["frag_bytes"] == sum(frags.values())
        spans = sorted((o, o + handed(self.allocator, z)) for o, z in self.sizes.items())
        overlap = [(x, y) for x, y in zip(spans, spans[1:], strict=False) if x[1] > y[0]]
        assert not overlap, f"fragments overlap: {overlap[:3]}"
        assert s["inflight"] == s["hold"] - s["release"]
        small = {(o - self.arena.data_off) // PAGE for o, z in self.sizes.items() if z <= PAGE}
        large = sum(handed(self.allocator, z) // PAGE for z in self.sizes.values() if z > PAGE)
        # what the heaps (ordinary and reserve) keep for the next fragment, with no fragment left in it
        extra = s["pages_in_use"] - large - len(small)
        assert 0 <= extra <= KEPT[self.allocator], (extra, self.allocator)
        assert s["reserve_pages"] <= RESERVE and s["reserve_peak"] <= RESERVE
        assert s["reserve_taken"] - s["reserve_returned"] == s["reserve_pages"]
        assert s["budget_held"] == s["inflight"] - s["reserve_pages"]
        if self.budget:
            assert s["budget_held"] <= s["budget_peak"] <= self.budget


TestPoolModel = PoolModel.TestCase
TestPoolModel.settings = settings(max_examples=int(os.environ.get("NTA_HYPOTHESIS_EXAMPLES", 200)),
                                  stateful_step_count=60, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])
