"""Memory at the limit, the parts without traffic: the bisection of 'nta bench pressure', the reserve rules,
the summary's lines, flow names and hashes, and the option checks (tests/netns/test_pressure.py runs them
on real traffic)."""

from __future__ import annotations

import pytest

from harness.bench.pressure import SLAB_CLASSES, rules, smallest
from harness.errors import UsageError
from harness.pressure import Limits, check, describe_flow, flow_hash
from harness.report import pressure_lines


@pytest.mark.parametrize("need, start", [(1, 1), (7, 1), (291, 320), (3114, 3136), (50, 400), (1000, 3)])
def test_the_bisection_finds_the_smallest_that_holds_and_prints_every_probe(need, start):
    seen = []
    v, best, probes = smallest(lambda x: (x >= need, {"x": x}), start, lambda x, got: seen.append(x))
    assert v == need and best == {"x": need}
    assert [x for x, _ in probes] == seen and len(seen) <= 2 * max(need, start).bit_length() + 2
    assert all(ok == (x >= need) for x, (ok, _) in probes)


def test_the_reserve_rules():
    assert SLAB_CLASSES == 8  # 32 .. 4,096 bytes
    assert rules(70_744) == {"exact": 18, "exact_x1_2": 21, "two_n_m": 35 + 8}
    assert rules(4096) == {"exact": 1, "exact_x1_2": 2, "two_n_m": 2 + 8}


def test_flows_are_named_and_hashed_as_the_program_does():
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    eth, ip4, ports = Ether(dst="02:00:00:00:00:02"), IP(src="10.0.0.1", dst="10.0.0.2"), UDP(sport=1000, dport=2049)
    udp = bytes(eth / ip4 / ports)
    assert describe_flow(udp) == "udp 10.0.0.1:1000 > 10.0.0.2:2049"
    tagged = bytes(eth / Dot1Q(vlan=5) / ip4 / ports)
    assert describe_flow(tagged) == "udp 10.0.0.1:1000 > 10.0.0.2:2049" and flow_hash(tagged) == flow_hash(udp)
    six = bytes(Ether(dst="02:00:00:00:00:02") / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=5, dport=3260))
    assert describe_flow(six) == "tcp 2001:db8::1:5 > 2001:db8::2:3260"
    assert flow_hash(six) != flow_hash(udp)
    assert describe_flow(bytes(Ether(dst="ff:ff:ff:ff:ff:ff", type=0x0806) / (b"x" * 28))) == "ethertype 0x0806"


@pytest.mark.parametrize("kw, needle", [
    ({"budget": 0}, "bad --budget 0"), ({"reserve": 5}, "--reserve 5: only with --permit"),
    ({"reserve": 100, "permit": "udp"}, "bad --reserve 100: larger than the arena's 100 pages"),
    ({"budget": 90, "reserve": 20, "permit": "udp"}, "bad --budget 90 with --reserve 20"),
    ({"stuck": 65}, "bad --stuck 65: at most 64"), ({"flow_limit": 0}, "bad --flow-limit 0"),
])
def test_the_option_checks(kw, needle):
    args = {"budget": None, "reserve": None, "permit": None, "flow_limit": None, "stuck": None, **kw}
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")) as ei:
        check(**args, arena_pages=100, controller=True)
    assert ei.value.exit_code == 2


def test_limits_need_a_controller():
    with pytest.raises(UsageError, match="--budget: only with --controller"):
        check(10, None, None, None, None, arena_pages=100, controller=False)
    check(None, None, None, None, None, arena_pages=100, controller=False)  # no limits: nothing to check
    assert not Limits() and Limits(budget=3) and Limits(budget=3).as_dict()["budget"] == 3


def test_the_summary_says_what_is_not_reconciled_or_balanced():
    p = {"drops": {"handled": 10, "kept": 7, "dropped": 2, "reconciled": False,
                   "by_reason": {"nomem": 2, "flow_limit": 0, "reserve_exhausted": 0, "not_permitted": 0}},
         "reserve": {"pages": 4, "taken": 3, "returned": 2, "outstanding": 1, "peak": 3, "min_free": 1, "allocs": 5,
                     "exhausted": 0, "balanced": False}}
    lines = pressure_lines(p)
    assert lines[0].startswith("drops NOT reconciled: handled 10 = kept 7 + no memory 2")
    assert lines[1].startswith("reserve NOT balanced: 4 pages, 3 taken, 2 returned, 1 outstanding")
