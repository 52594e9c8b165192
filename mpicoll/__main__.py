"""``python -m mpicoll <command>``: ``info`` reports versions, MPI, launcher and providers."""

from __future__ import annotations

import sys

USAGE = """usage: python -m mpicoll info [--json]
       python -m mpicoll.bench ...   (the benchmark suite; see its -h)"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE + "\n")
        return 0 if argv else 2
    if argv[0] == "info":
        from .info import main as info_main

        return info_main(argv[1:])
    sys.stderr.write(f"unknown command {argv[0]!r}\n{USAGE}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
