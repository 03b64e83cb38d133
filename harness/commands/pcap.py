"""``nta inspect`` (and ``nta pcap info``): what a capture holds and what of it a replay sends;
``nta pcap imix``: write the bundled IMIX capture."""

from __future__ import annotations

import argparse
import sys

from harness import jsonfile
from harness.commands import examples, positive_int, write_doc
from harness.report import n


def cmd_inspect(args) -> int:
    from harness import pcapfile

    jsonfile.check_writable(args.json)
    docs, failed = [], 0
    human = args.json != "-"
    for path in args.files:
        try:
            c = pcapfile.load(path, mtu=args.mtu, keep_frames=False, strict=args.strict)
        except pcapfile.CaptureError as exc:
            print(f"nta: error: {exc}", file=sys.stderr)
            docs.append({"path": path, "error": str(exc)})
            failed += 1
            continue
        docs.append(c.as_dict())
        if c.cut_short:
            print(pcapfile.cut_short_warning(c), file=sys.stderr)
        if human:
            print(describe(c, mtu_given=args.mtu is not None))
    write_doc(args, jsonfile.document("inspect", captures=docs))
    return pcapfile.CaptureError.exit_code if failed else 0


def describe(c, mtu_given: bool) -> str:
    """What 'nta inspect' prints of one capture."""
    hist = ", ".join(f"{k}: {n(v)}" for k, v in c.sizes_hist.items()) or "-"
    lines = [c.path,
             f"  format       {c.format}, {c.byte_order}-endian"
             + (f", {c.interfaces} interface{'s' if c.interfaces != 1 else ''}" if c.format == "pcapng"
                else ""),
             f"  link types   {c.linktype_text() or '-'}",
             f"  packets      {n(c.packets)} ({n(c.bytes)} bytes captured) over {c.duration:.6f} s"
             + (f"; {n(c.ts_backwards)} timestamps go backwards" if c.ts_backwards else ""),
             f"  to send      {n(c.frames)} frames, {n(c.frame_bytes)} bytes"
             + (f", {c.min_frame}..{c.max_frame} bytes each" if c.frames else ""),
             f"  frame sizes  {hist}",
             f"  VLAN         {n(c.vlan)} tagged, {n(c.qinq)} with two or more tags",
             f"  IPv4, IPv6   {n(c.ipv4)}, {n(c.ipv6)}",
             f"  truncated    {n(c.truncated)} (captured shorter than on the wire; sent as captured)",
             f"  MTU          {c.mtu} ({'given' if mtu_given else 'chosen'}; the frames need {c.mtu_needed})",
             f"  converted    {n(c.converted)} given an Ethernet header"
             + (f"; {n(c.fcs_stripped)} without the FCS the capture kept" if c.fcs_stripped else "")]
    lines += [f"  skipped      {n(k)}: {why}" for why, k in sorted(c.skipped.items())]
    return "\n".join(lines)


def cmd_pcap_imix(args) -> int:
    from harness import imix

    count = imix.write_imix(args.out, cycles=args.cycles)
    print(f"wrote {args.out}: {count} packets (64/576/1500-byte UDP frames, 7:4:1)")
    return 0


def _inspect_args(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--mtu", type=int, default=None,
                   help="the veth MTU to plan for (default: the smallest that carries every frame)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON ('-' for stdout only)")
    p.add_argument("--strict", action="store_true",
                   help="a file that ends inside its last record is an error (default: its complete records, "
                        "and a warning)")
    p.set_defaults(func=cmd_inspect)


def add(sub) -> None:
    add_inspect(sub)
    add_pcap(sub)


def add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="what a capture holds and what of it a replay sends",
                       description="Read each FILE as 'nta run' does and summarise it: format, link types, "
                                   "packets, frames to send after conversion and skips, frame sizes, VLAN, "
                                   "IPv4/IPv6 and truncated counts, the MTU. Exit status 2 if a file is "
                                   "malformed.",
                       epilog=examples("""
                           nta inspect ../shared/pcaps/pcpp-pcapng-example.pcapng
                           nta inspect --json - capture.pcap"""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _inspect_args(p)


def add_pcap(sub) -> None:
    p = sub.add_parser("pcap", help="write the bundled IMIX capture ('pcap info' = 'inspect')",
                       epilog=examples("""
                           nta pcap imix build/imix.pcap --cycles 100"""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="pcap_cmd", metavar="{info,imix}", required=True)
    _inspect_args(psub.add_parser("info", help="the same as 'nta inspect'"))
    im = psub.add_parser("imix", help="write the deterministic IMIX capture (64/576/1500 bytes, 7:4:1)")
    im.add_argument("out", metavar="OUT")
    im.add_argument("--cycles", type=positive_int, default=100,
                    help="rounds of 12 frames (default 100: 1,200 packets)")
    im.set_defaults(func=cmd_pcap_imix)
