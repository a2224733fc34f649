"""Profile one cloche command in-process, worker threads included (cProfile sees one thread).

    sudo .venv/bin/python bench/profile_cloche.py [--top N] [--sort tottime|cumulative] -- build ...

Every thread started during the command gets its own profiler; the stats are merged and the
top functions printed, so the steps that run in the executor's worker threads show up.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _patch_threads() -> None:
    original = threading.Thread.run

    def run(self):  # type: ignore[no-untyped-def]
        prof = cProfile.Profile()
        with _lock:
            _profiles.append(prof)
        prof.enable()
        try:
            return original(self)
        finally:
            prof.disable()

    threading.Thread.run = run  # type: ignore[method-assign]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sort", default="tottime")
    p.add_argument("--out", help="also dump the merged stats here (pstats format)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    ns = p.parse_args()
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    from cloche.cli.main import cli as cloche_cli
    _patch_threads()
    prof = cProfile.Profile()
    prof.enable()
    code = 0
    try:
        cloche_cli.main(args, prog_name="cloche", standalone_mode=False)
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        prof.disable()
    stats = pstats.Stats(prof)
    for extra in _profiles:
        stats.add(extra)
    if ns.out:
        stats.dump_stats(ns.out)
    stats.sort_stats(ns.sort).print_stats(ns.top)
    return code


if __name__ == "__main__":
    sys.exit(main())
