"""--permit in the kernel: the translated filter, loaded as XDP the way the runs load theirs, gives libpcap's
verdict on every frame of every shared capture (BPF_PROG_RUN per frame, jumbo frames in fragments
included). The same filters as the user-space test (tests/unit/test_permit.py)."""

from __future__ import annotations

import os

import pytest

from harness import pcapfile
from harness.permit import Filter
from harness.permitprog import PermitProgram
from tests.unit.test_permit import FILTERS


@pytest.fixture(scope="module")
def captures(pcaps):
    out = []
    for name in sorted(os.listdir(pcaps)):
        if name.endswith((".pcap", ".pcapng")):
            try:
                cap = pcapfile.load(os.path.join(pcaps, name))
            except pcapfile.CaptureError:
                continue
            if cap.frames:
                out.append(cap)
    assert sum(c.frames for c in out) > 5000 and any(c.max_frame > 4096 for c in out)
    return out


@pytest.mark.parametrize("text", FILTERS)
def test_the_kernel_gives_libpcaps_verdict_on_every_shared_frame(text, captures):
    f = Filter(text)
    with PermitProgram(f) as prog:
        for cap in captures:
            ours = prog.verdicts(cap)
            blob = bytes(cap.blob)
            theirs = [f.matches(blob[o:o + n]) for o, n in zip(cap.offsets.tolist(), cap.lengths.tolist(), strict=True)]
            bad = [i for i, (a, b) in enumerate(zip(ours.tolist(), theirs, strict=True)) if a != b]
            assert not bad, f"{os.path.basename(cap.path)}: {len(bad)} frames disagree, the first is frame {bad[0]}"
