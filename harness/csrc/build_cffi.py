"""Build the harness's two C modules from their real headers (see allocator/build_cffi.py):

* harness._traffic_c: the BPF contract (bpf/nta_shared.h), the built-in replayer's send loop (AF_PACKET
  and XDP live frames), the frags-aware XDP loader, a device's ethtool statistics (traffic.h). No
  allocator in it: loading XDP or replaying needs none.
* harness._ctl_c: the controller, the metadata ring's consumer and the per-packet work (ctl.h). It
  calls the allocator, so it links libnta.so, and takes the allocator's types from harness._nta_c and
  the contract's from harness._traffic_c (ffi.include), so a pool or a record from either passes here.

    python harness/csrc/build_cffi.py       # writes harness/_traffic_c.*.so and harness/_ctl_c.*.so
"""

import importlib.util
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ALLOCATOR = os.path.join(ROOT, "allocator")
BPF = os.path.join(ROOT, "bpf")
SHARED = os.path.join(BPF, "nta_shared.h")

_spec = importlib.util.spec_from_file_location("allocator_build", os.path.join(ALLOCATOR, "build_cffi.py"))
allocator_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(allocator_build)


def sources(*names: str) -> list[str]:
    return [os.path.join(HERE, n) for n in names]


def traffic_ffi() -> FFI:
    ffi = FFI()
    ffi.cdef(allocator_build.cdef_text([SHARED, os.path.join(HERE, "traffic.h")],
                                       prelude=allocator_build.KERNEL_TYPES))
    ffi.set_source("harness._traffic_c", '#include "nta_shared.h"\n#include "traffic.h"\n',
                   sources=sources("replay.c", "bpfload.c", "xdplive.c", "ethtool.c", "xdpverdict.c"),
                   include_dirs=[HERE, BPF], libraries=["bpf"],
                   extra_compile_args=allocator_build.CFLAGS)
    return ffi


def ctl_ffi(nta: FFI, traffic: FFI) -> FFI:
    ffi = FFI()
    ffi.include(nta)
    ffi.include(traffic)
    ffi.cdef(allocator_build.cdef_text([os.path.join(HERE, "ctl.h")]))
    link = allocator_build.linked_to_libnta()
    link["libraries"] = [*link["libraries"], "xdp", "bpf", "m"]
    # the included modules' declarations must be visible here too (cffi checks their layouts)
    preamble = "".join(f'#include "{h}"\n' for h in ("nta.h", "nta_shared.h", "traffic.h", "ctl.h"))
    ffi.set_source("harness._ctl_c", preamble,
                   sources=sources("ringbuf.c", "ctl.c", "ctl_flows.c", "ctlpoll.c", "handoff.c", "xsk.c"),
                   include_dirs=[HERE, ALLOCATOR, BPF], extra_compile_args=allocator_build.CFLAGS, **link)
    return ffi


if __name__ == "__main__":
    traffic = traffic_ffi()
    built = [allocator_build.compile_into_package(traffic),
             allocator_build.compile_into_package(ctl_ffi(allocator_build.ffibuilder(), traffic))]
    for path in built:
        print(f"built {os.path.relpath(path, ROOT)}", file=sys.stderr)
