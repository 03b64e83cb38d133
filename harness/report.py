"""Output for people: counts, tables, interval lines and the summaries of ``nta run``.

A summary is printed from the run's document, the same one ``--json`` writes
(harness.jsonfile), so the two cannot disagree.
"""

from __future__ import annotations

import os
import sys

from harness.figures import modes_text


def n(x) -> str:
    """A count with thousands separators; '-' for unknown."""
    return "-" if x is None else f"{int(round(x)):,}"


def table(rows: list[list[str]], header: list[str], out=sys.stdout) -> None:
    """Left-align the first column, right-align the others."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        print("  " + "  ".join(cells).rstrip(), file=out)


# -- interval lines -------------------------------------------------------------

META_HEAD = (f" {'meta/s':>11} {'lost/s':>8} {'alloc/s':>11} {'dropped/s':>10} {'free/s':>11} {'pages':>7} "
             f"{'recycle':>7} {'frag':>6}")


def interval_header(replayed: bool, meta: bool) -> str:
    head = (f"{'time':>9} {'veth tx/s':>12} {'rx/s':>12} {'drop/s':>10} {'rx':>13}" if replayed
            else f"{'time':>9} {'rx/s':>12} {'rx':>13}")
    return head + (META_HEAD if meta else "")


def interval_line(row: dict, done_pct: float | None = None) -> str:
    """One interval (a row of measure.Loop.intervals); ``done_pct``: how far the run is, on a terminal."""
    if "sent_pps" in row:
        line = (f"{row['t']:8.3f}s {n(row['sent_pps']):>12} {n(row['rx_pps']):>12} "
                f"{n(row['drop_pps']):>10} {n(row['rx_total']):>13}")
    else:
        line = f"{row['t']:8.3f}s {n(row['rx_pps']):>12} {n(row['rx_total']):>13}"
    if "meta_pps" in row:
        line += (f" {n(row['meta_pps']):>11} {n(row['lost_pps']):>8} {n(row['alloc_pps']):>11} "
                 f"{n(row['dropped_pps']):>10} {n(row['free_pps']):>11} {n(row['pages']):>7} "
                 f"{row['recycle_pct']:>6.1f}% {row['frag_pct']:>5.1f}%")
    if done_pct is not None:
        line += f"  [{done_pct:5.1f}%]"
    return line


# -- summaries ----------------------------------------------------------------------

COLUMNS = ["counting point", "packets", "bytes", "seconds", "pps"]


def capture_line(c: dict) -> str:
    """What of the capture goes on the wire: frames, conversions, truncations, skips by reason."""
    types = ", ".join(f"{name} x{k}" for name, k in c["linktypes"].items())
    parts = [f"capture: {n(c['packets'])} packets ({types or 'none'}) -> {n(c['frames'])} frames "
             f"at MTU {c['mtu']}"]
    if c["converted"]:
        parts.append(f"{n(c['converted'])} given an Ethernet header")
    if c["truncated"]:
        parts.append(f"{n(c['truncated'])} truncated by the capture's snap length (sent as captured)")
    if c["fcs_stripped"]:
        parts.append(f"{n(c['fcs_stripped'])} sent without their captured FCS")
    parts += [f"{n(k)} skipped: {why}" for why, k in sorted(c["skipped"].items())]
    return "; ".join(parts)


def _xdp_row(doc: dict) -> list[str]:
    x = doc["points"]["xdp"]
    return [f"XDP seen ({doc['xdp']['mode']})", n(x["packets"]), n(x["bytes"]), f"{x['seconds']:.3f}",
            n(x["pps"])]


# why the controller dropped a frame (DROP_REASONS), as the summary says it
DROP_TEXT = {"nomem": "no memory", "flow_limit": "over its flow's limit", "reserve_exhausted": "reserve exhausted",
             "not_permitted": "in the reserve, not permitted"}


def _drop_rows(doc: dict) -> list[list[str]]:
    """The controller's frames: kept, and dropped by reason (each reason that can happen in this run)."""
    c, p = doc["controller"]["controller"], doc.get("pressure")
    by = {k.removeprefix("drop_"): v for k, v in c.items() if k.startswith("drop_")}
    shown = [r for r in by if r == "nomem" or by[r] or p]
    return ([["  kept", n(c["kept"]), n(c["bytes"]), "", ""]]
            + [[f"  dropped: {DROP_TEXT.get(r, r)}", n(by[r]), "", "", ""] for r in shown])


def _meta_rows(doc: dict) -> list[list[str]]:
    ring, c, x = doc["ring"], doc["controller"]["controller"], doc["controller"].get("xsk")
    if x:
        return [["AF_XDP: redirected to sockets", n(ring["submitted"]), "", "", ""],
                ["  no socket on the queue", n(ring["lost"]), "", "", ""],
                ["  dropped: no fill buffer", n(x["rx_dropped"]), "", "", ""],
                ["  dropped: socket RX ring full", n(x["rx_ring_full"]), "", "", ""],
                ["received into the arena", n(x["received"]), n(x["bytes"]), "", ""],
                ["controller handled", n(c["handled"]), "", "", ""], *_drop_rows(doc)]
    return [["metadata ring: submitted", n(ring["submitted"]), "", "", ""],
            ["metadata ring: lost (full)", n(ring["lost"]), "", "", ""],
            ["controller handled", n(c["handled"]), "", "", ""], *_drop_rows(doc)]


def _controller_lines(doc: dict, out) -> None:
    ctl = doc["controller"]
    p, c = ctl["pool"], ctl["controller"]
    print(f"  controller: hold {ctl['hold']}, peak {n(c['peak_held'])} fragments held; pool: "
          f"{n(p['hold'])} pages mapped, alloc fast {n(p['fast'])} slow {n(p['slow'])} refill "
          f"{n(p['refill'])}, recycle cached {n(p['cached'])} ring {n(p['ring'])} ring_full "
          f"{n(p['ring_full'])}; at the end {n(p['frags'])} fragments live, {n(p['inflight'])} pages "
          f"in flight (the pool's own cache and ring)", file=out)
    print("  " + memory_line(ctl["memory"]), file=out)
    if ctl.get("xsk"):
        print("  " + xsk_line(ctl["xsk"], p, ctl["memory"], doc["config"]["fill"]), file=out)
    if ctl.get("free_on") == "other":
        print("  " + remote_line(c, p, ctl["reader"]), file=out)
    if doc.get("pressure"):
        for line in pressure_lines(doc["pressure"]):
            print("  " + line, file=out)
    lat = ctl["latency_us"]
    if lat["samples"]:
        how = f"slept {ctl['drain_us']} us on an empty ring" if ctl["drain_us"] else "spun on an empty ring"
        print(f"  latency XDP -> controller: p50 {lat['p50']:.0f} us, p99 {lat['p99']:.0f} us, "
              f"max {lat['max']:.0f} us ({n(lat['samples'])} records; {how})", file=out)


def xsk_line(x: dict, p: dict, m: dict, fill: int) -> str:
    """AF_XDP: the fill ring, the trimming, and the memory the held frames took apart from the fill ring."""
    per = m["bytes_per_frame_held"]
    return (f"AF_XDP ({modes_text(x['sockets'])}; UMEM = the arena): fill ring up to {n(fill)} buffers of "
            f"{n(m['fill_buffer_bytes'])} bytes"
            + (" (a page each)" if 0 < m["fill_buffers_at_peak"] == m["fill_pages_at_peak"] else "")
            + f", {n(x['posted'])} posted in all, {n(x['in_fill'])} still posted at the end, "
            f"{n(x['wakeups'])} wake-ups, fill ring found empty {n(x['rx_fill_ring_empty_descs'])} times; "
            f"{n(p['trims'] - x['heads_cut'])} buffers cut to their frames"
            + (f" and {n(x['heads_cut'])} aligned pages' headroom cut off before posting" if x["heads_cut"] else "")
            + f" gave back {p['trimmed_bytes'] / 1048576:.1f} MiB"
            + (f" ({n(x['untrimmed'])} not cut: the {m['allocator']} allocator cannot)" if x["untrimmed"] else "")
            + (f", {n(x['copied'])} short frames copied out (copybreak)" if x["copied"] else "")
            + f"; at the peak {n(m['frames_held_at_peak'])} frames held took "
            + (f"{per:,.0f} bytes each" if per is not None else "-")
            + f" beyond the {n(m['fill_pages_at_peak'])} pages its {n(m['fill_buffers_at_peak'])} fill buffers "
              f"({m['fill_bytes_at_peak'] / 1048576:.1f} MiB) fill, asking for "
            + (f"{m['asked_per_frame_held']:,.0f}" if m["asked_per_frame_held"] is not None else "-")
            + f"; at the end, the fill ring given back, {n(x['held_at_end'])} frames held took "
            + (f"{x['bytes_per_frame_held']:,.0f} bytes each ({n(x['pages_at_end'])} pages)"
               if x["bytes_per_frame_held"] is not None else "nothing")
            + (f"; {n(x['bad_descs'])} RX descriptors named no posted buffer" if x["bad_descs"] else ""))


def remote_line(c: dict, p: dict, reader: dict) -> str:
    """Frees on another CPU: what the controller handed its reader, what the reader posted to the pool's
    owner, and whether the owner applied all of it."""
    applied = ("all applied" if p["applied"] == p["posted"] and not p["pending"]
               else f"{n(p['applied'])} applied, {n(p['pending'])} NOT applied")
    return (f"frees on another CPU: {n(c['handed_off'])} fragments handed to the reader, which freed "
            f"{n(reader['freed'])}, posting {n(p['posted'])} in {n(reader['batches'])} batches to the owner: "
            f"{applied} (queue full {n(p['full'])} times, longest wait {p['max_wait_ns'] / 1000:.0f} us); "
            f"{n(c['handoff_full'])} put by the controller (handoff full)")


def queue_lines(doc: dict, out) -> None:
    """With --queues N: a line per RX queue, their sum, and the queues' account."""
    qs = doc["queues"]
    meta = qs[0].get("ring") is not None
    head = ["queue", "cpu", "sent", "XDP seen", "bytes"]
    xsk = meta and bool(qs[0].get("xsk"))
    if meta:
        head += (["to socket", "no socket"] if xsk else ["ring submitted", "lost"]) + [
            "handled", "freed", "remote posted", "applied", "live"]
    if xsk:
        head += ["no fill buffer", "RX ring full"]

    def cells(q: dict) -> list[str]:
        row = [n(q["sent"]), n(q["xdp"]["packets"]), n(q["xdp"]["bytes"])]
        if meta:
            row += [n(q["ring"]["submitted"]), n(q["ring"]["lost"]), n(q["handled"]), n(q["frees"]),
                    n(q["remote"]["posted"]), n(q["remote"]["applied"]), n(q["live_fragments"])]
        if xsk:
            row += [n(q["xsk"]["rx_dropped"]), n(q["xsk"]["rx_ring_full"])]
        return row

    rows = [[str(q["queue"]), str(q["cpu"]), *cells(q)] for q in qs]
    total = {"sent": None if None in (q["sent"] for q in qs) else sum(q["sent"] for q in qs),
             "xdp": {k: sum(q["xdp"][k] for q in qs) for k in ("packets", "bytes")}}
    if meta:
        total.update(ring={k: sum(q["ring"][k] for q in qs) for k in ("submitted", "lost")},
                     handled=sum(q["handled"] for q in qs), frees=sum(q["frees"] for q in qs),
                     remote={k: sum(q["remote"][k] for q in qs) for k in ("posted", "applied")},
                     live_fragments=sum(q["live_fragments"] for q in qs))
    if xsk:
        total["xsk"] = {k: sum(q["xsk"][k] for q in qs) for k in ("rx_dropped", "rx_ring_full")}
    rows.append(["sum", "", *cells(total)])
    table(rows, head, out)
    acct = doc["reconciliation"]["queues"]
    bad = [str(q["queue"]) for q in qs if not q["reconciled"]]
    if acct["reconciled"]:
        print("  queues reconciled: each queue's " + ("sent = XDP seen, " if qs[0]["reconciliation"]["unaccounted"]
                                                      is not None else "")
              + ("XDP seen = to socket + no socket, to socket = handled + dropped; " if xsk else
                 "XDP seen = ring submitted + lost, handled = submitted; " if meta else "")
              + f"the queues' XDP counts add up to XDP seen {n(acct['xdp_seen'])}", file=out)
    else:
        print(f"  queues NOT reconciled: queues {', '.join(bad) or 'none'} disagree; the queues' XDP counts "
              f"add up to {n(acct['xdp_packets'])}, XDP seen {n(acct['xdp_seen'])}", file=out)


def pressure_lines(p: dict) -> list[str]:
    """Memory at the limit (harness.pressure.figures): the account of drops, the budget, the reserve's
    books, the permitted frames, the stuck flows, a starved fill ring."""
    d = p["drops"]
    lines = [f"drops {'reconciled' if d['reconciled'] else 'NOT reconciled'}: handled {n(d['handled'])} = kept "
             f"{n(d['kept'])} + " + " + ".join(f"{DROP_TEXT[r]} {n(v)}" for r, v in d["by_reason"].items())]
    if "budget" in p:
        b = p["budget"]
        lines.append(f"budget: {n(b['pages'])} pages a pool, at most {n(b['peak_held'])} held; {n(b['refused'])} "
                     f"requests for a page refused, {n(b['reclaims'])} times idle pages given back to make room")
    if "permitted" in p:
        q = p["permitted"]
        lines.append(f"permitted ({q['filter']!r}): XDP {n(q['xdp'])}, handled {n(q['handled'])}, kept {n(q['kept'])}, "
                     f"dropped {n(q['dropped'])}; {n(q['lost'])} permitted frames lost; at most "
                     f"{n(q['peak_bytes_held'])} bytes of them held")
    if "reserve" in p:
        r = p["reserve"]
        lines.append(f"reserve {'balanced' if r['balanced'] else 'NOT balanced'}: {n(r['pages'])} pages, "
                     f"{n(r['taken'])} taken, {n(r['returned'])} returned, {n(r['outstanding'])} outstanding; at most "
                     f"{n(r['peak'])} held, at least {n(r['min_free'])} free; {n(r['allocs'])} placed there, "
                     f"{n(r['exhausted'])} refused (exhausted)")
    if "stuck" in p:
        s = p["stuck"]
        lines.append(f"stuck flows (never read): {', '.join(f['flow'] for f in s['flows'])}; {n(s['handled'])} of "
                     f"their frames, {n(s['kept'])} held until the end")
    if "flow_limit" in p:
        f = p["flow_limit"]
        lines.append(f"flow limit: {n(f['bytes'])} bytes a flow (as the pool hands them out), {n(f['flows'])} flows, "
                     f"{n(f['dropped'])} frames over it dropped")
    if "fill_ring" in p:
        f = p["fill_ring"]
        lines.append(f"fill ring: starved {n(f['starved'])} times by the pool's memory ({n(f['posts_refused'])} "
                     f"buffers refused), the kernel dropping {n(f['dropped_while_starved'])} frames meanwhile (no fill "
                     f"buffer); {n(f['posted_reserve'])} reserve buffers posted, {n(f['unmarked'])} frames unmarked")
    return lines


def timing_line(t: dict) -> str:
    """How the frames kept to their schedule where they landed (harness.timing.figures)."""
    if t.get("not_timed"):
        return f"timing: not measured ({t['not_timed']})"
    if not t["gaps"]:
        return f"timing ({t['schedule']}): too few frames to time"
    return (f"timing at {t['where']} against {t['schedule']}: gap error p50 {t['p50_us']:.1f} us, p99 "
            f"{t['p99_us']:.1f} us, max {t['max_us']:.1f} us over {n(t['gaps'])} gaps; drift at the end "
            f"{t['drift_us']:+,.0f} us ({t['drift_pct']:+.3f}%) of the {t['scheduled_s']:.3f} s scheduled")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def memory_line(m: dict) -> str:
    """The memory the frames' fragments took (harness.consumer.Consumer.memory)."""
    return (f"memory ({m['allocator']}): peak {n(m['peak_pages'])} pages holding fragments "
            f"({m['peak_pages'] * m['page_size'] / 1048576:.1f} MiB) for at most {n(m['peak_fragments'])} "
            f"fragments ({m['peak_bytes_asked'] / 1048576:.1f} MiB asked for); utilisation at the peak "
            f"{pct(m['utilisation_at_peak'])}, mean {pct(m['utilisation_mean'])}; mapped and idle (cache, "
            f"ring) at most {n(m['idle_mapped_pages_peak'])} pages")


def _metadata_verdict(doc: dict) -> str:
    ring, handled = doc["ring"], doc["controller"]["controller"]["handled"]
    seen = doc["points"]["xdp"]["packets"]
    x = doc["controller"].get("xsk")
    if x:
        ok = doc["reconciliation"]["metadata"]["reconciled"]
        return (f"  sockets {'reconciled' if ok else 'NOT reconciled'}: XDP seen {n(seen)} = redirected "
                f"{n(ring['submitted'])} + no socket {n(ring['lost'])}; redirected = received {n(x['received'])} + "
                f"no fill buffer {n(x['rx_dropped'])} + RX ring full {n(x['rx_ring_full'])}; handled "
                f"{n(handled)} = received")
    if doc["reconciliation"]["metadata"]["reconciled"]:
        return (f"  metadata reconciled: XDP seen {n(seen)} = ring submitted {n(ring['submitted'])} + lost "
                f"{n(ring['lost'])}; handled {n(handled)} = submitted")
    return (f"  metadata NOT reconciled: XDP seen {n(seen)}, ring submitted {n(ring['submitted'])} + lost "
            f"{n(ring['lost'])}, controller handled {n(handled)}")


def run_summary(doc: dict, out=sys.stdout) -> None:
    """The summary of a replayed run, from its document (harness.run.RunResult.as_dict)."""
    cfg, pts = doc["config"], doc["points"]
    rp, veth, acct = pts["replayer"], pts["veth_sender_drops"], doc["reconciliation"]["traffic"]
    print(f"\nSummary: {os.path.basename(cfg['pcap'])}, {n(rp['packets'])} packets in "
          f"{doc['wall_seconds']:.3f} s "
          f"(XDP {doc['xdp']['mode']}, action {cfg['action']})", file=out)
    print("  " + capture_line(doc["capture"]), file=out)
    rows = [[f"replayer ({rp['driver']})", n(rp["packets"]), n(rp["bytes"]), f"{rp['seconds']:.3f}",
             n(rp["pps"])],
            ["veth sender drops", n(veth["packets"]), "", "", ""],
            *([["  of which sent again", n(veth["resent"]), "", "", ""]] if veth["resent"] else []),
            _xdp_row(doc)]
    if doc["ring"] is not None:
        rows += _meta_rows(doc)
    table(rows, COLUMNS, out)
    if doc["ring"] is not None:
        _controller_lines(doc, out)
        print(_metadata_verdict(doc), file=out)
    if doc.get("queues"):
        queue_lines(doc, out)
    if rp["failed"]:
        print(f"  replayer failures: {n(rp['failed'])} packets {rp['driver']} could not send"
              + (f" ({rp['error']})" if rp.get("error") else ""), file=out)
    if doc.get("timing"):
        print("  " + timing_line(doc["timing"]), file=out)
    if cfg.get("unique_flows"):
        x = pts["xdp"]
        print("  unique flows: each loop's addresses moved apart by its number (tcpreplay's --unique-ip, "
              "checksums kept)" + ("; tcpreplay does not send what it cannot edit (counted failed)"
                                   if rp["driver"] == "tcpreplay" else
                                   f"; {n(rp['unchanged'])} frames of later loops sent as they were (not IP)"
                                   if rp.get("unchanged") is not None else "")
              + (f"; {n(x['flows'])} distinct flows at XDP" + (f" ({n(x['overflow'])} more than its table held)"
                                                               if x["overflow"] else "") if "flows" in x else ""),
              file=out)
    rate = doc.get("rate")
    if rate:
        print(f"  rate: asked {n(rate['asked'])} {rate['unit']}, the replayer reached {n(rate['reached'])} "
              f"({rate['ratio']:.3f}): " + ("held" if rate["held"] else
                                           f"NOT held, {rp['driver']}'s ceiling here with these options"),
              file=out)
    if rp.get("runs") is not None:
        print(f"  xdp sender: {n(rp['runs'])} live frames run in {n(rp['calls'])} BPF_PROG_RUN calls "
              f"(kernel batches of up to {rp['kernel_batch']}), "
              f"{n(rp['packets'])} redirected; {n(rp['xdp_xmit'])} taken by the peer's rings, "
              f"{n(rp['xdp_xmit_errors'])} refused (ring full)", file=out)
    if rp["retried_enobufs"] or rp["retried_eagain"]:
        print(f"  replayer retries (device or socket queue full, nothing lost): ENOBUFS "
              f"{n(rp['retried_enobufs'] or 0)}, EAGAIN {n(rp['retried_eagain'] or 0)}", file=out)
    exp = doc["expected_packets"]
    exp_text = (f"expected {n(exp)} = {n(doc['capture']['frames'])} frames x {cfg['loops']} loops"
                if exp is not None else "expected: cut by --duration/--limit")
    seen = pts["xdp"]["packets"]
    if acct["unaccounted"] == 0:
        verdict = (f"reconciled: sent {n(rp['packets'])} = XDP seen {n(seen)} + veth drops {n(veth['lost'])}"
                   + (" not sent again" if veth["resent"] else "") + f"; {exp_text}")
    else:
        verdict = (f"NOT reconciled: {n(acct['unaccounted'])} packets unaccounted for "
                   f"(sent {n(rp['packets'])}, "
                   f"XDP seen {n(seen)}, veth drops {n(veth['packets'])}, of which sent again "
                   f"{n(veth['resent'])}); {exp_text}")
    if not acct["as_expected"]:
        verdict += f"; the replayer sent {n(rp['packets'])}, not {n(exp)}"
    print("  " + verdict, file=out)


def live_summary(doc: dict, out=sys.stdout) -> None:
    """The summary of a run on a named interface (harness.live), from its document."""
    where = f"{doc['iface']} [{doc['netns']}]" if doc["netns"] else doc["iface"]
    x = doc["points"]["xdp"]
    print(f"\nSummary: {where}, {n(x['packets'])} packets in {doc['wall_seconds']:.3f} s "
          f"(XDP {doc['xdp']['mode']}, action {doc['action']})", file=out)
    rows = [_xdp_row(doc)]
    if doc["ring"] is not None:
        rows += _meta_rows(doc)
    table(rows, COLUMNS, out)
    if doc["ring"] is not None:
        print(_metadata_verdict(doc), file=out)
    if doc.get("queues"):
        queue_lines(doc, out)
    if doc["controller"] is not None:
        _controller_lines(doc, out)
