"""--permit: tcpdump filters translated from libpcap's classic BPF into C, held to libpcap's own bpf_filter.

The translation is compiled here by gcc against bpf/nta_permit.h as user space includes it, and run on
every frame of every shared capture, twice: the frame in one buffer, and with only its first 64 bytes
in the first buffer (the rest read as bpf_xdp_load_bytes reads a jumbo frame's fragments). The same
translation loaded into the kernel as XDP is tests/netns/test_permit.py's.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

import pytest

from harness import pcapfile
from harness.permit import BadFilter, Filter, Insn, translate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What users write (pcap-filter(7)), and what reaches each part of the translation: absolute, indirect
# and MSH loads, scratch memory, every ALU operation and jump, lengths, VLAN and MPLS offsets, loads
# past a frame's end and past its first buffer.
FILTERS = [
    "tcp port 3260 or tcp port 2049 or tcp port 10809",  # iSCSI, NFS, NBD
    "tcp", "udp", "icmp", "arp", "ip", "ip6", "not ip", "not (tcp or udp)",
    "tcp port 443", "ip6 and tcp port 443", "udp port 53", "port 80", "portrange 1000-2000",
    "tcp port 445",
    "vlan", "vlan and udp", "vlan 100", "vlan and vlan", "mpls", "mpls and ip",
    "tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "ip[2:2] > 1000", "len > 1000", "greater 1400", "less 100", "len >= 5000",
    "net 10.0.0.0/8", "src net 192.168.0.0/16 and dst port 80", "ether broadcast", "ether multicast",
    "ether[0] & 1 = 1", "ip[6:2] & 0x1fff != 0", "ip and ip[8] < 64", "ip proto 47", "icmp6",
    "tcp and (tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420)",
    "(udp[8:4] * 3) % 7 = 2", "udp[8:2] / 3 = 100", "udp[8] - 4 = 0", "ip[0] & 0xf > 5",
    "tcp[13] >> 1 = 1", "tcp[13] << 2 = 8", "(ip[1] ^ 0x10) = 0", "(ip[1] | 0x10) = 0x10", "-ip[0] = 0xbb",
    "ether[5000] = 0", "ether[1500:4] != 0", "tcp[100000:2] = 1",
    "ip[2:2] - ip[0] > 50", "udp[8:2] / (udp[10] + 1) > 2", "udp[8:2] % (udp[10] + 1) = 2",
]


def shared_frames() -> list[bytes]:
    """Every frame of every shared capture that can be read, as a replay sends it (Ethernet)."""
    pcaps = os.path.join(os.path.dirname(ROOT), "shared", "pcaps")
    out = []
    for name in sorted(os.listdir(pcaps)):
        if not name.endswith((".pcap", ".pcapng")):
            continue
        try:
            cap = pcapfile.load(os.path.join(pcaps, name))
        except pcapfile.CaptureError:
            continue  # the malformed ones
        blob = bytes(cap.blob)
        out += [blob[o:o + n] for o, n in zip(cap.offsets.tolist(), cap.lengths.tolist(), strict=True)]
    return out


@pytest.fixture(scope="module")
def frames(pcaps):
    got = shared_frames()
    assert len(got) > 5000
    return got


def compiled(f: Filter, tmp_path) -> ctypes.CDLL:
    """The translation as user space builds it: gcc, -Wall -Werror, into a shared object."""
    d = f.written()
    src = tmp_path / "permit.c"
    src.write_text("#include <stdint.h>\n"
                   "typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32;\n"
                   "#define NTA_PERMIT_USER\n#include \"nta_permit.h\"\n#include \"nta_permit_gen.h\"\n"
                   "int permit(const __u8 *frame, __u32 len, __u32 first)\n{\n"
                   "\tstruct nta_pkt p = { frame, frame + (first < len ? first : len), (void *)frame, len, 0 };\n"
                   "\treturn nta_permit(&p);\n}\n")
    so = tmp_path / "permit.so"
    done = subprocess.run(["cc", "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                           f"-I{ROOT}/bpf", f"-I{d.name}", str(src), "-o", str(so)], capture_output=True, text=True)
    d.cleanup()
    assert done.returncode == 0, done.stderr
    lib = ctypes.CDLL(str(so))
    lib.permit.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32]
    return lib


@pytest.mark.parametrize("text", FILTERS)
def test_the_translation_agrees_with_libpcap_on_every_shared_frame(text, frames, tmp_path):
    f = Filter(text)
    lib = compiled(f, tmp_path)
    ours_whole = [bool(lib.permit(fr, len(fr), len(fr))) for fr in frames]
    ours_split = [bool(lib.permit(fr, len(fr), 64)) for fr in frames]
    theirs = [f.matches(fr) for fr in frames]
    bad = [i for i, (a, b, c) in enumerate(zip(ours_whole, ours_split, theirs, strict=True)) if not a == b == c]
    assert not bad, f"{len(bad)} frames disagree, the first: {frames[bad[0]][:64].hex()}"


def test_the_filters_tell_frames_apart(frames):
    """The list is worth its time: most filters accept some shared frames and refuse others."""
    both = [t for t in FILTERS if len({Filter(t).matches(fr) for fr in frames}) == 2]
    assert len(both) >= len(FILTERS) * 2 // 3, sorted(set(FILTERS) - set(both))


@pytest.mark.parametrize("text, why", [("tcp prt 80", ": syntax error"), ("port 99999", ": illegal port number"),
                                       ("   ", "an empty filter"), ("len / ip[0] > 5", ": division by zero")])
def test_a_filter_libpcap_refuses_is_one_line(text, why):
    with pytest.raises(BadFilter) as ei:
        Filter(text)
    assert why in str(ei.value) and str(ei.value).startswith("bad --permit") and "\n" not in str(ei.value)


@pytest.mark.parametrize("insns, why", [
    ([Insn(0x20, 0, 0, 0xFFFFF000 + 4), Insn(0x16, 0, 0, 0)], "ancillary"),  # ld [vlan_tci]
    ([Insn(0x34, 0, 0, 0), Insn(0x16, 0, 0, 0)], "division by the constant 0"),
    ([Insn(0x05, 0, 0, 5), Insn(0x16, 0, 0, 0)], "past the program's end"),
    ([Insn(0xFF, 0, 0, 0), Insn(0x16, 0, 0, 0)], "not translated"),
    ([], "empty"),
])
def test_programs_the_translation_cannot_take_are_refused(insns, why):
    with pytest.raises(BadFilter, match=why):
        translate(insns)
