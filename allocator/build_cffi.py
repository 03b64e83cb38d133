"""Build harness/_nta_c: the cffi binding of allocator/, from the real header.

The declarations cffi needs (cdef) are the header itself run through the C
preprocessor, plus its integer #defines; the module is compiled against the
same header, so a declaration cannot drift from the code.

    python allocator/build_cffi.py          # writes harness/_nta_c.*.so
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BPF = os.path.join(ROOT, "bpf")
HEADERS = [os.path.join(HERE, "nta.h"), os.path.join(HERE, "nta_replay.h"), os.path.join(BPF, "nta_shared.h")]
# nta_shared.h is written in the kernel's types for the BPF side
KERNEL_TYPES = "".join(f"typedef uint{n}_t __u{n};\n" for n in (8, 16, 32, 64))


def cdef_text() -> str:
    out = [KERNEL_TYPES]
    for header in HEADERS:
        pre = subprocess.run(["cc", "-E", "-P", "-DNTA_CDEF", "-nostdinc", header],
                             capture_output=True, text=True, check=True).stdout
        defines = re.findall(r"^#define\s+(NTA_\w+)\s+(0x[0-9a-fA-F]+u?|\d+u?)\s*(?:/\*.*)?$",
                             open(header).read(), re.M)
        out += [pre] + [f"#define {name} {value.rstrip('u')}" for name, value in defines]
    return "\n".join(out) + "\n"


def build(out_dir: str = os.path.join(ROOT, "harness")) -> str:
    ffi = FFI()
    ffi.cdef(cdef_text())
    sources = sorted(glob.glob(os.path.join(HERE, "*.c")))
    includes = "".join(f'#include "{os.path.basename(h)}"\n' for h in HEADERS)
    ffi.set_source("_nta_c", includes, sources=sources,
                   include_dirs=[HERE, BPF], libraries=["m"],
                   extra_compile_args=["-std=gnu11", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra"])
    tmp = os.path.join(ROOT, "build", "cffi")
    os.makedirs(tmp, exist_ok=True)
    so = ffi.compile(tmpdir=tmp, verbose=False)
    dest = os.path.join(out_dir, os.path.basename(so))
    shutil.copy2(so, dest + ".tmp")
    os.replace(dest + ".tmp", dest)
    return dest


if __name__ == "__main__":
    path = build()
    print(f"built {os.path.relpath(path, ROOT)}", file=sys.stderr)
