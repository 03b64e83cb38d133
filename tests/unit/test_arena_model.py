"""The allocator against a simple model: hypothesis drives alloc/free (bad frees included).

The model is a dict offset -> (size, fill byte). After every step:
nta_check() proves the arena consistent, the counters equal the model's, no
two live blocks overlap, and every live block still holds its fill byte.
"""

import errno
import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from harness.nta import Arena, ArenaError

SIZES = st.one_of(st.integers(1, 1518), st.sampled_from([64, 576, 1500, 32, 33, 4096]),
                  st.integers(4097, 70000))


class ArenaModel(RuleBasedStateMachine):
    kind = "nta"

    @initialize(chunk=st.sampled_from([32, 64]), cache=st.sampled_from([0, 2, 16, None]))  # None: the default
    def make(self, chunk, cache):
        self.arena = Arena(max_pages=96, reserve_pages=4, kind=self.kind, chunk_size=chunk, cache_depth=cache)
        self.chunk = chunk
        self.live: dict[int, tuple[int, int]] = {}
        self.freed: list[tuple[int, int]] = []
        self.fill = 0

    def teardown(self):
        if hasattr(self, "arena"):
            self.arena.close()

    def _granule(self, size):
        if self.kind == "pow2":
            return 1 << max(self.chunk.bit_length() - 1, (size - 1).bit_length()) if size <= 4096 else \
                4096 << (((size + 4095) // 4096) - 1).bit_length()
        return -(-size // self.chunk) * self.chunk if size <= 4096 else -(-size // 4096) * 4096

    def _take(self, off, size):
        assert off % self.chunk == 0
        for o, (s, _) in self.live.items():
            assert off + size <= o or o + s <= off, f"block {off}+{size} overlaps {o}+{s}"
        self.fill = (self.fill + 1) % 251 + 1
        self.arena.view(off, size)[:] = self.fill
        self.live[off] = (size, self.fill)

    @rule(size=SIZES, reserve=st.booleans())
    def alloc(self, size, reserve):
        try:
            off = self.arena.alloc(size, reserve=reserve)
        except ArenaError as e:
            assert e.errno == errno.ENOMEM
            return
        assert off not in self.live
        self._take(off, size)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        off = data.draw(st.sampled_from(sorted(self.live)))
        size, _ = self.live.pop(off)
        self.arena.free(off, size)
        self.freed.append((off, size))

    @precondition(lambda self: self.freed)
    @rule(data=st.data())
    def double_free(self, data):
        off, size = data.draw(st.sampled_from(self.freed))
        if off in self.live:  # the space was handed out again
            return
        before = self.arena.stats()
        try:
            self.arena.free(off, size)
            raise AssertionError(f"a second free of {off} was accepted")
        except ArenaError as e:
            # already free, or inside a block that took its place, or in a page given back
            assert e.errno in (errno.EALREADY, errno.ENOENT, errno.EINVAL), e
        after = self.arena.stats()
        assert after["bad_frees"] == before["bad_frees"] + 1
        assert {k: v for k, v in after.items() if k != "bad_frees"} == \
               {k: v for k, v in before.items() if k != "bad_frees"}

    @precondition(lambda self: self.live)
    @rule(data=st.data(), how=st.sampled_from(["inside", "too big", "too small"]))
    def bad_free(self, data, how):
        off = data.draw(st.sampled_from(sorted(self.live)))
        size, _ = self.live[off]
        g = self._granule(size)
        if how == "inside":
            if g <= self.chunk:
                return
            args, codes = (off + self.chunk, size), (errno.ENOENT,)
        elif how == "too big":
            args, codes = (off, g + 1), (errno.ERANGE,)
        else:
            # the largest size whose block is one granule smaller
            if self.kind == "pow2":
                smaller = g // 2 if g // 2 >= self.chunk else 0
                if smaller == self.chunk and g == self.chunk:
                    smaller = 0
            else:
                smaller = g - (self.chunk if g <= 4096 else 4096)
            if smaller <= 0 or self._granule(smaller) == g:
                return
            args, codes = (off, smaller), (errno.ERANGE,)
        before = self.arena.stats()
        try:
            self.arena.free(*args)
            raise AssertionError(f"bad free {how} {args} accepted")
        except ArenaError as e:
            assert e.errno in codes, (how, args, e)
        assert self.arena.stats()["live_allocs"] == before["live_allocs"]

    @rule(sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=40))
    def bulk(self, sizes):
        sizes = np.array(sizes, dtype=np.uint32)
        offs = self.arena.alloc_bulk(sizes)
        for off, size in zip(offs.tolist(), sizes.tolist(), strict=True):
            if off:
                self._take(off, size)
        keep = offs != 0
        self.arena.free_bulk(offs[keep], sizes[keep])
        for off in offs[keep].tolist():
            del self.live[off]

    @rule()
    def flush(self):
        self.arena.cache_flush()

    @rule()
    def trim(self):
        self.arena.trim()

    @invariant()
    def consistent(self):
        if not hasattr(self, "arena"):
            return
        self.arena.check()
        s = self.arena.stats()
        assert s["live_allocs"] == len(self.live)
        assert s["bytes_requested"] == sum(size for size, _ in self.live.values())
        assert s["bytes_handed"] == sum(self._granule(size) for size, _ in self.live.values())
        assert s["reserve_pages_in_use"] <= 4
        for off, (size, fill) in self.live.items():
            v = self.arena.view(off, size)
            assert v[0] == fill and v[-1] == fill and v[size // 2] == fill, f"block at {off} was overwritten"
            del v


class Pow2Model(ArenaModel):
    kind = "pow2"


common = settings(max_examples=int(os.environ.get("NTA_HYPOTHESIS_EXAMPLES", 200)),
                  stateful_step_count=80, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
TestNtaModel = ArenaModel.TestCase
TestNtaModel.settings = common
TestPow2Model = Pow2Model.TestCase
TestPow2Model.settings = common
