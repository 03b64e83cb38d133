"""The harness's compiled modules, each imported in one place with one error when it is not built.

* ``_nta_c``: the allocator (allocator/, libnta.so);
* ``_traffic_c``: the BPF contract, the built-in replayer, the frags-aware XDP loader (harness/csrc);
* ``_ctl_c``: the controller: the metadata ring's consumer and the per-packet work (harness/csrc).
"""

from __future__ import annotations

import importlib
import importlib.util

from harness.errors import NtaError


def built(name: str) -> bool:
    """Whether 'make build' has made ``harness.<name>``."""
    return importlib.util.find_spec(f"harness.{name}") is not None


def load(name: str):
    """``harness.<name>`` (a cffi module): its ``(ffi, lib)``. NtaError when 'make build' has not made it."""
    try:
        mod = importlib.import_module(f"harness.{name}")
    except ImportError as exc:
        raise NtaError(f"harness.{name} is not built ({exc}): run 'make build'") from None
    return mod.ffi, mod.lib
