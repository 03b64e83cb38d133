"""The benchmarks, by what they need: ``alloc`` (no root: allocator speed and space, fragmentation, bulk
calls, the page pool) and ``traffic`` (root: real traffic over veth into XDP). ``make bench`` runs them all.
"""
