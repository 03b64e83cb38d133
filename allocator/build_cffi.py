"""Build harness._nta_c: the cffi binding of the allocator (libnta.so), from its real header.

The declarations cffi needs (cdef) are the header itself run through the C
preprocessor, plus its integer #defines; the module is compiled against the
same header and linked with build/libnta.so (made by 'make build'), which is
copied beside it: a declaration cannot drift from the code, and there is one
copy of the allocator in a process, whichever module calls it.

    python allocator/build_cffi.py          # writes harness/_nta_c.*.so and harness/libnta.so
"""

import os
import re
import shutil
import subprocess
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, "build")
PACKAGE = os.path.join(ROOT, "harness")
LIBNTA = os.path.join(BUILD, "libnta.so")
# as the Makefile's (which says why -fno-tree-slp-vectorize)
CFLAGS = ["-std=gnu11", "-O2", "-fno-tree-slp-vectorize", "-fvisibility=hidden", "-Wall", "-Wextra"]
# nta_shared.h is written in the kernel's types for the BPF side
KERNEL_TYPES = "".join(f"typedef uint{n}_t __u{n};\ntypedef int{n}_t __s{n};\n" for n in (8, 16, 32, 64))


def cdef_text(headers: list[str], prelude: str = "") -> str:
    """The headers as cffi declarations: preprocessed with NTA_CDEF defined (no system includes), then
    their integer #defines, which the preprocessor consumed."""
    out = [prelude]
    for header in headers:
        pre = subprocess.run(["cc", "-E", "-P", "-DNTA_CDEF", "-nostdinc", header],
                             capture_output=True, text=True, check=True).stdout
        defines = re.findall(r"^#define\s+(NTA_\w+)\s+(0x[0-9a-fA-F]+u?|\d+u?)\s*(?:/\*.*)?$",
                             open(header).read(), re.M)
        out += [pre] + [f"#define {name} {value.rstrip('u')}" for name, value in defines]
    return "\n".join(out) + "\n"


def linked_to_libnta() -> dict:
    """set_source() arguments that link a module with build/libnta.so, found beside it at run time."""
    return {"libraries": ["nta"], "library_dirs": [BUILD], "extra_link_args": ["-Wl,-rpath,$ORIGIN"]}


def ffibuilder() -> FFI:
    ffi = FFI()
    ffi.cdef(cdef_text([os.path.join(HERE, "nta.h")]))
    ffi.set_source("harness._nta_c", '#include "nta.h"\n', include_dirs=[HERE], extra_compile_args=CFLAGS,
                   **linked_to_libnta())
    return ffi


def compile_into_package(ffi: FFI) -> str:
    """Compile ``ffi`` under build/cffi and install the module into harness/; returns its path."""
    if not os.path.exists(LIBNTA):
        raise SystemExit(f"{LIBNTA} is missing: run 'make build'")
    tmp = os.path.join(BUILD, "cffi")
    os.makedirs(tmp, exist_ok=True)
    so = ffi.compile(tmpdir=tmp, verbose=False)
    for src in (so, LIBNTA):
        dest = os.path.join(PACKAGE, os.path.basename(src))
        shutil.copy2(src, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
    return os.path.join(PACKAGE, os.path.basename(so))


if __name__ == "__main__":
    path = compile_into_package(ffibuilder())
    print(f"built {os.path.relpath(path, ROOT)}", file=sys.stderr)
