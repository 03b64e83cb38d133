"""``--permit FILTER``: which frames may take the reserve, in tcpdump's own filter language (pcap-filter(7)).

libpcap parses the filter and compiles it to classic BPF for Ethernet (scapy's ``compile_filter`` calls
``pcap_compile``); this module translates that program into a C function the XDP programs include, as
Cloudflare's cbpfc and pwru bring tcpdump filters into eBPF: a statement per instruction, forward jumps
only (classic BPF has no other), every packet load bounds-checked for the verifier (bpf/nta_permit.h).
The translation is a header of its own (``Filter.header()``), written for the run beside nothing else
and shown by ``--ebpf``; libpcap's own ``bpf_filter`` (``Filter.matches()``) is what the tests hold it
to, frame by frame.

::

    f = Filter("tcp port 3260 or tcp port 2049 or tcp port 10809")
    f.header()            # C: static ... int nta_permit(const struct nta_pkt *pkt) { ... }
    f.matches(frame)      # libpcap's verdict on a frame (bytes)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import tempfile

from harness.errors import NtaError, UsageError

DLT_EN10MB = 1  # the XDP programs see Ethernet frames: other link types are given an Ethernet header first
HEADER = "nta_permit_gen.h"  # the translation, as the programs include it

# classic BPF (include/uapi/linux/bpf_common.h, filter.h)
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
SIZE = {0x00: 4, 0x08: 2, 0x10: 1}  # W, H, B
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
SRC_X = 0x08
ALU_OPS = {0x00: "+", 0x10: "-", 0x20: "*", 0x30: "/", 0x40: "|", 0x50: "&", 0x60: "<<", 0x70: ">>", 0x80: "neg",
           0x90: "%", 0xA0: "^"}
JMP_OPS = {0x00: "ja", 0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&"}
RET_A = 0x10
MISC_TAX, MISC_TXA = 0x00, 0x80
SKF_AD_OFF = 0xFFFFF000  # Linux's ancillary loads (-4096): libpcap makes them only for a live capture
SCRATCH = 16  # BPF_MEMWORDS


@dataclasses.dataclass(frozen=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int


class BadFilter(UsageError):
    """A filter libpcap refused, or a program this translation cannot take."""


def compile_filter(text: str) -> list[Insn]:
    """libpcap's classic BPF program for ``text`` on Ethernet frames; BadFilter with libpcap's reason."""
    try:
        from scapy.arch.common import compile_filter as pcap_compile
        from scapy.error import Scapy_Exception
    except ImportError as exc:  # pragma: no cover - scapy is a dependency
        raise NtaError(f"--permit needs scapy and libpcap: {exc}") from None
    try:
        prog = pcap_compile(text, linktype=DLT_EN10MB)
    except Scapy_Exception as exc:
        why = str(exc)  # "Failed to compile filter expression '<text>' (<libpcap's reason>)"
        head = f"'{text}' ("
        why = why[why.index(head) + len(head):].removesuffix(")") if head in why else why
        raise BadFilter(f"bad --permit {text!r}: {why}") from None
    except ImportError:
        raise NtaError("--permit needs libpcap (Debian's libpcap0.8): run 'make setup'") from None
    return [Insn(prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k & 0xFFFFFFFF)
            for i in range(prog.bf_len)]


def _load(size: int, off: str, then: str) -> str:
    """A packet load into t, then ``then``; past the frame's end the filter ends with 0, as classic BPF's."""
    return f"if (nta_pkt_load(pkt, {off}, {size}, &t)) return 0; else {then}"


def _statement(pc: int, ins: Insn, n: int) -> str:
    """The C of one instruction (its jumps by label: L<target>)."""
    cls, code, k = ins.code & 7, ins.code, ins.k
    mode, size = code & 0xE0, SIZE.get(code & 0x18)
    if cls in (LD, LDX) and mode in (ABS, IND) and k >= SKF_AD_OFF:
        raise BadFilter(f"instruction {pc}: a Linux ancillary load (code {code:#x}, k {k:#x}) has no XDP form")
    if cls == LD:
        if mode == ABS and size:
            return _load(size, f"{k}u", "A = t;")
        if mode == IND and size:
            return _load(size, f"X + {k}u", "A = t;")
        if mode == IMM:
            return f"A = {k}u;"
        if mode == MEM and k < SCRATCH:
            return f"A = M[{k}];"
        if mode == LEN:
            return "A = pkt->len;"
    if cls == LDX:
        if mode == IMM:
            return f"X = {k}u;"
        if mode == MEM and k < SCRATCH:
            return f"X = M[{k}];"
        if mode == LEN:
            return "X = pkt->len;"
        if mode == MSH and size == 1:
            return _load(1, f"{k}u", "X = (t & 0xf) << 2;")
    if cls == ST and k < SCRATCH:
        return f"M[{k}] = A;"
    if cls == STX and k < SCRATCH:
        return f"M[{k}] = X;"
    if cls == ALU and (code & 0xF0) in ALU_OPS:
        op, src = ALU_OPS[code & 0xF0], "X" if code & SRC_X else f"{k}u"
        if op == "neg":
            return "A = -A;"
        if op in ("/", "%"):
            if not code & SRC_X and k == 0:
                raise BadFilter(f"instruction {pc}: a division by the constant 0")
            return f"if (X == 0) return 0; else A {op}= X;" if code & SRC_X else f"A {op}= {src};"
        if op in ("<<", ">>"):  # libpcap's bpf_filter: a shift of 32 or more gives 0
            return f"A = {src} < 32 ? A {op} {src} : 0;"
        return f"A {op}= {src};"
    if cls == JMP and (code & 0xF0) in JMP_OPS:
        op = JMP_OPS[code & 0xF0]
        if op == "ja":
            return f"goto L{_target(pc, k, n)};"
        src = "X" if code & SRC_X else f"{k}u"
        cond = f"(A & {src})" if op == "&" else f"A {op} {src}"
        return f"if ({cond}) goto L{_target(pc, ins.jt, n)}; else goto L{_target(pc, ins.jf, n)};"
    if cls == RET:
        return "return A != 0;" if code & 0x18 == RET_A else f"return {int(k != 0)};"
    if cls == MISC:
        if code & 0xF8 == MISC_TAX:
            return "X = A;"
        if code & 0xF8 == MISC_TXA:
            return "A = X;"
    raise BadFilter(f"instruction {pc}: classic BPF code {code:#x} (k {k:#x}) is not translated")


def _target(pc: int, off: int, n: int) -> int:
    to = pc + 1 + off
    if to >= n:  # libpcap's programs stay inside; a hand-made one might not
        raise BadFilter(f"instruction {pc}: a jump past the program's end")
    return to


def translate(insns: list[Insn], text: str = "") -> str:
    """C for the program: a function nta_permit() over a struct nta_pkt, a statement per instruction
    (with a label where a jump lands), that returns non-zero when the filter accepts the frame."""
    if not insns:
        raise BadFilter("an empty classic BPF program")
    n = len(insns)
    body = [_statement(pc, ins, n) for pc, ins in enumerate(insns)]
    targets = set()
    for pc, ins in enumerate(insns):
        if ins.code & 7 == JMP:
            targets |= ({pc + 1 + ins.k} if ins.code & 0xF0 == 0 else {pc + 1 + ins.jt, pc + 1 + ins.jf})
    uses_mem = any(i.code & 7 in (ST, STX) or (i.code & 7 in (LD, LDX) and i.code & 0xE0 == MEM) for i in insns)
    if insns[-1].code & 7 != RET and not (insns[-1].code & 7 == JMP):
        raise BadFilter("the program does not end with a return")
    lines = [f"/* {HEADER}: made by harness/permit.py from the tcpdump filter",
             f" *     {text!r}" if text else " *     (a classic BPF program)",
             " * through libpcap's classic BPF (DLT_EN10MB), an instruction a statement; loads through",
             " * bpf/nta_permit.h. Non-zero: the filter accepts the frame. */",
             "NTA_PERMIT_INLINE int nta_permit(const struct nta_pkt *pkt)",
             "{",
             "\t__u32 A = 0, X = 0, t = 0;",
             *(["\t__u32 M[16] = { 0 };"] if uses_mem else []),
             "\t(void)A, (void)X, (void)t;"]
    for pc, stmt in enumerate(body):
        label = f"L{pc}: " if pc in targets else ""
        code = insns[pc]
        lines.append(f"{label}\t{stmt}\t/* {pc}: code {code.code:#04x} jt {code.jt} jf {code.jf} k {code.k:#x} */")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- libpcap's own verdict ------------------------------------------------------------------


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


_libpcap = None


def _pcap():
    global _libpcap
    if _libpcap is None:
        name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise NtaError("libpcap is missing (Debian's libpcap0.8): run 'make setup'") from None
        lib.bpf_filter.restype = ctypes.c_uint
        lib.bpf_filter.argtypes = [ctypes.POINTER(_BpfInsn), ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
        _libpcap = lib
    return _libpcap


class Filter:
    """A --permit filter: its text, libpcap's classic BPF program, the C translation, and libpcap's verdict
    on a frame (the reference the translation is tested against)."""

    def __init__(self, text: str):
        if not text.strip():
            raise BadFilter("bad --permit '': an empty filter (to permit every frame, say so: 'ip or not ip')")
        self.text = text
        self.insns = compile_filter(text)
        self.c = translate(self.insns, text)
        self._prog = (_BpfInsn * len(self.insns))(*[(i.code, i.jt, i.jf, i.k) for i in self.insns])

    header_name = HEADER

    def header(self) -> str:
        return self.c

    def matches(self, frame: bytes) -> bool:
        """libpcap's bpf_filter on the frame as sent (its wire and captured lengths both its length)."""
        return _pcap().bpf_filter(self._prog, frame, len(frame), len(frame)) != 0

    def written(self) -> tempfile.TemporaryDirectory:
        """A directory holding the translation as HEADER, for a compiler's -I (removed with the object)."""
        d = tempfile.TemporaryDirectory(prefix="nta-permit-")
        with open(os.path.join(d.name, HEADER), "w") as f:
            f.write(self.c)
        return d
