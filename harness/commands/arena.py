"""``nta attach PATH`` and ``nta pool PATH``: an arena's counters and its pools', read from another
process."""

from __future__ import annotations

from harness import jsonfile
from harness.commands import examples, json_arg, parser, write_doc
from harness.report import n, table


def cmd_attach(args) -> int:
    from harness.nta import Arena

    jsonfile.check_writable(args.json)
    with Arena.attach(args.path) as a:
        st = a.stats()
        hist, runs = a.free_histogram()
    doc = jsonfile.document("attach", path=args.path, kind=a.kind, page_size=a.page_size,
                            chunk_size=a.chunk_size, max_pages=a.max_pages, reserve_pages=a.reserve_pages,
                            cache_depth=a.cache_depth, stats=st,
                            free_regions={str(k): int(v) for k, v in enumerate(hist) if v},
                            free_page_runs=runs)
    if write_doc(args, doc):
        return 0
    print(f"{args.path}: {a.kind} arena, {a.max_pages:,} pages of {a.page_size} bytes, "
          f"chunks of {a.chunk_size}, reserve {a.reserve_pages} pages, size cache {a.cache_depth}")
    table([[k, n(v)] for k, v in st.items()], ["counter", "value"])
    return 0


def cmd_pool(args) -> int:
    from harness.nta import Arena, counter_groups

    jsonfile.check_writable(args.json)
    with Arena.attach(args.path) as a:
        pools = a.pools()
    if write_doc(args, jsonfile.document("pool", path=args.path, pools=pools)):
        return 0
    if not pools:
        print(f"{args.path}: no pools")
        return 0
    header = ["counter"] + [f"if {p['ifindex']} q {p['queue']} (pid {p['pid']}{', torn' if p['torn'] else ''})"
                            for p in pools]
    rows = [[f"{group}.{name}"] + [n(p["stats"][name]) for p in pools]
            for group, names in counter_groups("struct nta_pool_stats") for name in names]
    print(f"{args.path}: {len(pools)} pool{'s' if len(pools) > 1 else ''} (counters as last published"
          + ("; torn: its owner was writing them all the while, so they may disagree" if any(p["torn"] for p in pools)
             else "") + ")")
    table(rows, header)
    return 0


def add(sub) -> None:
    p = parser(sub, "attach", "attach to an arena read-only and print its counters",
               "Map an arena another process created (a file under /dev/shm) read-only, validate its header "
               "and print its counters; nothing is changed.",
               examples("""
                   nta attach /dev/shm/nta-run-1234
                   nta attach /dev/shm/nta-run-1234 --json -"""))
    p.add_argument("path", metavar="PATH")
    json_arg(p)
    p.set_defaults(func=cmd_attach)
    p = parser(sub, "pool", "print the page pools of an arena, with the kernel's counter names",
               "Attach to an arena read-only and print the counters its page pools last published (alloc "
               "fast/slow/..., recycle cached/ring/..., maps, in flight).",
               examples("""
                   nta pool /dev/shm/nta-run-1234
                   nta pool /dev/shm/nta-run-1234 --json -"""))
    p.add_argument("path", metavar="PATH")
    json_arg(p)
    p.set_defaults(func=cmd_pool)
