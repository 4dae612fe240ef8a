"""A container healthcheck: ``python -m ops.healthcheck URL [--expect LINE]``.

Exits 0 when ``URL`` answers 2xx within the timeout (and, with ``--expect``, its body has a
line that equals ``LINE``, e.g. ``exchange_settlement_ready 1.0`` from a ``/metrics`` page),
else 1 with one line on stderr saying why. Standard library only, so it starts in tens of
milliseconds inside the project's image (compose/docker-compose.yml runs it every 10 s).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence


def check(url: str, expect: str | None = None, timeout_s: float = 3.0) -> str | None:
    """None when healthy, else why not (one line)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return f"{url}: HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return f"{url}: {getattr(e, 'reason', e)}"
    if expect is not None and expect not in body.splitlines():
        return f"{url}: no line {expect!r}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.healthcheck", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--expect", metavar="LINE", help="a line the body must contain")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    problem = check(args.url, args.expect, args.timeout)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
