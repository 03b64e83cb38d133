"""Memory at the limit: a run's limits (a budget per pool, a reserve only permitted frames may take, a
limit per flow, flows never read), their checks, the stuck flows picked from the capture, and the
figures a run reports of them.

Where each is enforced: the budget and the reserve in the page pool (allocator/pool.c: pool_may_take, the
pfmemalloc rule), the permission in the XDP program (harness/permit.py's translation), the drops by
reason, the flow limits and the stuck flows in the controller (harness/csrc/ctl.c: drop()).
"""

from __future__ import annotations

import dataclasses
import socket
import struct

from harness import cmodule
from harness.errors import UsageError

_ffi, _lib = cmodule.load("_ctl_c")



@dataclasses.dataclass(frozen=True)
class Limits:
    """What each RX queue's pool and controller are held to (the defaults: nothing, as before)."""

    budget: int = 0  # ordinary pages each pool may hold: handed out, holding fragments, idle (0: none)
    reserve: int = 0  # pages of each queue's arena set apart for permitted frames, beside the budget
    permit: object = None  # harness.permit.Filter: the frames that may take the reserve
    flow_limit: int = 0  # bytes one flow may hold, charged as its pool hands them out (0: none)
    stuck: tuple[int, ...] = ()  # flow hashes never read until the run ends
    stuck_names: tuple[str, ...] = ()  # and how people name them (protocol, addresses, ports)

    @property
    def may_reserve(self) -> bool:
        """Permitted frames may take the reserve (there is one, and a filter to permit them)."""
        return bool(self.reserve and self.permit)

    def __bool__(self) -> bool:
        return bool(self.budget or self.reserve or self.permit or self.flow_limit or self.stuck)

    def as_dict(self) -> dict:
        return {"budget": self.budget or None, "reserve": self.reserve or None,
                "permit": self.permit.text if self.permit else None, "flow_limit": self.flow_limit or None,
                "stuck": [{"flow_hash": h, "flow": name} for h, name in zip(self.stuck, self.stuck_names, strict=True)]}


NONE = Limits()  # no limits: a run as before


def limits_text(lim: Limits) -> str:
    """The limits, for a run's header line."""
    parts = []
    if lim.budget:
        parts.append(f"budget {lim.budget:,} pages a pool")
    if lim.permit:
        parts.append(f"permit {lim.permit.text!r}" + (f" to a reserve of {lim.reserve:,} pages" if lim.reserve
                                                        else " (no reserve)"))
    if lim.flow_limit:
        parts.append(f"flow limit {lim.flow_limit:,} bytes")
    if lim.stuck:
        parts.append(f"{len(lim.stuck)} flows never read")
    return ", ".join(parts)


def check(budget: int | None, reserve: int | None, permit: str | None, flow_limit: int | None, stuck: int | None,
          arena_pages: int, controller: bool) -> None:
    """The options alone, before anything is made: one line naming the option, exit status 2."""
    given = {name: v for name, v in (("--budget", budget), ("--reserve", reserve), ("--permit", permit),
                                     ("--flow-limit", flow_limit), ("--stuck", stuck)) if v is not None}
    for name, v in given.items():
        if name != "--permit" and v < 1:
            raise UsageError(f"bad {name} {v}: " + {"--budget": "a pool needs at least 1 page",
                                                    "--reserve": "at least 1 page (without one, leave it out)",
                                                    "--flow-limit": "at least one frame's bytes",
                                                    "--stuck": "at least 1 flow"}[name])
    if given and not controller:
        raise UsageError(f"{next(iter(given))}: only with --controller or --rx afxdp (it limits the pool's "
                         "memory and the controller's flows)")
    if reserve is not None and permit is None:
        raise UsageError(f"--reserve {reserve}: only with --permit FILTER (the reserve is for the frames it "
                         "permits; nothing else may take it)")
    if reserve is not None and reserve >= arena_pages:
        raise UsageError(f"bad --reserve {reserve}: larger than the arena's {arena_pages:,} pages (--arena-pages)")
    if budget is not None and budget + (reserve or 0) > arena_pages:
        raise UsageError(f"bad --budget {budget}" + (f" with --reserve {reserve}" if reserve else "")
                         + f": more than the arena's {arena_pages:,} pages (--arena-pages)")
    if stuck is not None and stuck > _lib.NTA_CTL_STUCK_MAX:
        raise UsageError(f"bad --stuck {stuck}: at most {_lib.NTA_CTL_STUCK_MAX} flows")


def flow_hash(frame: bytes) -> int:
    """A frame's flow, as the XDP program hashes a record's (harness/csrc/ctl_flows.c)."""
    return _lib.nta_flow_hash(frame, len(frame))


def describe_flow(frame: bytes) -> str:
    """A flow, as people name one: protocol, addresses and ports (what the frame shows of them)."""
    off, etype = 12, int.from_bytes(frame[12:14], "big")
    while etype in (0x8100, 0x88A8) and len(frame) >= off + 6:
        off += 4
        etype = int.from_bytes(frame[off:off + 2], "big")
    off += 2
    l4, src, dst, l4off = None, None, None, None
    if etype == 0x0800 and len(frame) >= off + 20:
        l4, src, dst = frame[off + 9], socket.inet_ntoa(frame[off + 12:off + 16]), socket.inet_ntoa(
            frame[off + 16:off + 20])
        l4off = off + (frame[off] & 0xF) * 4
    elif etype == 0x86DD and len(frame) >= off + 40:
        l4 = frame[off + 6]
        src = socket.inet_ntop(socket.AF_INET6, frame[off + 8:off + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[off + 24:off + 40])
        l4off = off + 40
    if src is None:
        return f"ethertype {etype:#06x}"
    name = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}.get(l4, f"proto {l4}")
    if l4 in (6, 17) and len(frame) >= l4off + 4:
        sport, dport = struct.unpack("!HH", frame[l4off:l4off + 4])
        return f"{name} {src}:{sport} > {dst}:{dport}"
    return f"{name} {src} > {dst}"


def pick_stuck(cap, k: int, permit=None) -> list[tuple[int, str]]:
    """The k flows of ``cap`` that never get read: picked by hash (the k smallest flow hashes, among the
    flows no frame of which the filter permits), each with its name. UsageError when there are fewer."""
    blob, flows = bytes(cap.blob), {}
    for o, n in zip(cap.offsets.tolist(), cap.lengths.tolist(), strict=True):
        frame = blob[o:o + n]
        h = flow_hash(frame)
        entry = flows.setdefault(h, {"name": describe_flow(frame), "permitted": False})
        entry["permitted"] |= bool(permit and permit.matches(frame))
    eligible = sorted(h for h, f in flows.items() if not f["permitted"])
    if len(eligible) < k:
        raise UsageError(f"bad --stuck {k}: {cap.path} has {len(eligible)} flows"
                         + (" that --permit does not permit" if permit else ""))
    return [(h, flows[h]["name"]) for h in eligible[:k]]


def charge(allocator: str, size: int) -> int:
    """What a fragment of ``size`` bytes takes in a pool of ``allocator`` (its truesize, which the flow
    limit counts), as a pool says."""
    from harness.nta import Arena, Pool

    with Arena(max_pages=64) as a, Pool(a, allocator=allocator) as p:
        return p.frag_size(size)


def check_flow_limit(flow_limit: int | None, cap, allocator: str) -> None:
    """A flow limit must hold one frame: the capture's largest, as the pool hands it out."""
    if flow_limit and cap.frames:
        need = charge(allocator, cap.max_frame)
        if flow_limit < need:
            raise UsageError(f"bad --flow-limit {flow_limit}: under one frame (the capture's largest, "
                             f"{cap.max_frame:,} bytes, takes {need:,} in a {allocator} pool)")


def figures(lim: Limits, ctl: dict, pool: dict, xsk: dict | None, permitted_xdp: int | None) -> dict | None:
    """What a run with limits reports of them (None without): every frame the controller handled kept or
    dropped for a reason (handled = kept + drops, exact); the budget's refusals; the reserve's books
    (balanced: what was taken was returned, nothing outstanding); the permitted frames from XDP to the
    controller; the stuck flows; and, through AF_XDP, the kernel's drops while the budget starved the
    fill ring."""
    if not lim:
        return None
    from harness.controller import DROP_REASONS

    by_reason = {name: ctl[f"drop_{name}"] for name in DROP_REASONS}
    out = {"limits": lim.as_dict(),
           "drops": {"handled": ctl["handled"], "kept": ctl["kept"], "by_reason": by_reason,
                     "dropped": sum(by_reason.values()),
                     "reconciled": ctl["handled"] == ctl["kept"] + sum(by_reason.values())}}
    if lim.budget:
        out["budget"] = {"pages": lim.budget, "peak_held": pool["budget_peak"], "refused": pool["budget_refused"],
                         "reclaims": pool["budget_reclaims"]}
    if lim.reserve:
        out["reserve"] = {"pages": lim.reserve, "taken": pool["reserve_taken"], "returned": pool["reserve_returned"],
                          "outstanding": pool["reserve_pages"], "peak": pool["reserve_peak"],
                          "min_free": pool["reserve_min_free"], "allocs": pool["reserve_allocs"],
                          "exhausted": pool["reserve_exhausted"],
                          "balanced": pool["reserve_taken"] == pool["reserve_returned"] and not pool["reserve_pages"]}
    if lim.permit:
        out["permitted"] = {"filter": lim.permit.text, "xdp": permitted_xdp, "handled": ctl["permitted"],
                            "kept": ctl["permitted_kept"], "dropped": ctl["permitted"] - ctl["permitted_kept"],
                            "lost": (permitted_xdp or 0) - ctl["permitted_kept"],
                            "peak_bytes_held": ctl["peak_permitted_bytes"]}
    if lim.stuck:
        out["stuck"] = {"flows": lim.as_dict()["stuck"], "handled": ctl["stuck_handled"], "kept": ctl["stuck_kept"]}
    if lim.flow_limit:
        out["flow_limit"] = {"bytes": lim.flow_limit, "flows": ctl["flows"], "dropped": by_reason["flow_limit"]}
    if xsk:
        out["fill_ring"] = {"starved": xsk["starved"], "posts_refused": xsk["post_fails"],
                            "dropped_while_starved": xsk["rx_dropped_starved"], "posted_reserve": xsk["posted_reserve"],
                            "unmarked": xsk["unmarked"]}
    return out
