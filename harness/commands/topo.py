"""``nta topo``: create, remove and list the harness's namespaces and veth pairs."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from harness import jsonfile
from harness.commands import examples, write_doc
from harness.errors import NtaError, require_root
from harness.report import table


def cmd_topo_up(args) -> int:
    from harness import topology

    require_root("nta topo up")
    topo = topology.Topology(args.name, mtu=args.mtu, persistent=True).create()
    print(f"{topo.gen_ns}:{topo.gen_if} <=> {topo.dut_ns}:{topo.dut_if}, mtu {topo.mtu}, IPv6 off "
          f"(remove with 'nta topo down {topo.tag}')")
    return 0


def cmd_topo_down(args) -> int:
    from harness import topology
    from harness.ifacestate import detach_stale

    require_root("nta topo down")
    for tag in args.names:
        topology.check_tag(tag)
    topos = topology.list_topologies(probe=False)
    known = {t.tag: t for t in topos}
    if args.names:
        missing = [tag for tag in args.names if tag not in known]
        if missing:
            raise NtaError(f"no topology named {', '.join(missing)} (see 'nta topo status')")
        topos = [known[tag] for tag in args.names]
    status = 0
    for fn in topology.remove_half_written() if not args.names else []:
        print(f"removed {fn} (an owner record its process did not finish writing)")
    detached = detach_stale() if not args.names else []
    for line in detached:
        print(line)
    for t in topos:
        if t.state == "live" and not args.force:
            print(f"nta: skipped {t.tag}: in use by pid {t.owner_pid} (--force removes it anyway)",
                  file=sys.stderr)
            status = 1
            continue
        ended = topology.end_processes(t.tag)
        if ended:
            print(f"ended {topology.ended_text(ended)} still inside {t.tag}")
        removed = topology.remove_namespaces(t.tag)
        print(f"removed {t.tag} ({t.state}): {', '.join(removed) or 'owner record only'}")
    if not topos and not detached:
        print("no nta topologies")
    return status


def cmd_topo_status(args) -> int:
    from harness import topology

    jsonfile.check_writable(args.json)
    topos = topology.list_topologies()
    if write_doc(args, jsonfile.document("topo status", topologies=[dataclasses.asdict(t) for t in topos])):
        return 0
    if not topos:
        print("no nta topologies")
        return 0
    rows = [[t.tag, t.state, str(t.owner_pid or "-"), " ".join(t.namespaces) or "-", str(t.mtu or "-"),
             f"{t.xdp} (id {t.xdp_prog_id})" if t.xdp else "-"] for t in topos]
    table(rows, ["name", "state", "owner", "namespaces", "mtu", "xdp"])
    return 0


def add(sub) -> None:
    p = sub.add_parser(
        "topo", help="create, remove and list the harness's namespaces and veth pairs",
        description="Topologies are two namespaces (nta-gen-NAME, nta-dut-NAME) joined by a veth pair "
                    "(veth-gen <=> veth-dut), IPv6 off. 'nta run' makes its own and removes it; these "
                    "commands are for a topology that outlives a command, and for clean-up after a "
                    "killed run.",
        epilog=examples("""
            nta topo up --name lab --mtu 9000   # persistent, until 'nta topo down lab'
            nta topo status
            nta topo down                      # every stale or persistent topology
            nta topo down lab"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="topo_cmd", metavar="{up,down,status}", required=True)
    up = tsub.add_parser("up", help="create a persistent topology")
    up.add_argument("--name", default="manual", help="topology name (default 'manual')")
    up.add_argument("--mtu", type=int, default=1500, help="veth MTU (default 1500)")
    up.set_defaults(func=cmd_topo_up)
    down = tsub.add_parser("down", help="remove topologies (default: all stale and persistent ones)")
    down.add_argument("names", nargs="*", metavar="NAME")
    down.add_argument("--force", action="store_true", help="also remove topologies of running commands")
    down.set_defaults(func=cmd_topo_down)
    st = tsub.add_parser("status", help="list topologies, their owners and XDP programs")
    st.add_argument("--json", metavar="FILE", help="also write the list as JSON ('-' for stdout)")
    st.set_defaults(func=cmd_topo_status)
