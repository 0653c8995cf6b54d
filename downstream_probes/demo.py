"""``make demo``: the end-to-end demonstration (grows as the pipeline lands)."""

from __future__ import annotations

import sys


def main() -> int:
    print("mrsuperb demo: the pipeline is not complete yet; run `make test` to exercise what exists.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
