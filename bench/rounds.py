"""Run one bench script several times per variant, interleaved, and print ONE JSON object
with min/median/max of its figures.

Each run of a bench script starts its own server on a fresh database, so every round is
against a freshly started server. Variants differ only in environment variables given to
the bench script (and so to the server it starts), and run one after the other inside each
round (A, B, A, B, ...): that is the only fair way to compare them on a shared machine.

    python bench/rounds.py -n 3 -- bench/history.py
    python bench/rounds.py -n 3 --variant one:DIALTONE_WORKERS=1 \\
        --variant two:DIALTONE_WORKERS=2,DIALTONE_REDIS_URL=redis://127.0.0.1:6379/14 \\
        -- bench/ws_fanout.py -C 200 -S 4 -M 250
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

SUMMARY_KEYS = (
    "deliveries_per_s",
    "deliveries_lost",
    "req_per_s",
    "logins_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "open_s",
    "generator_cpu_pct",
    "server_cpu_pct",
    "server_us_per_delivery",
    "server_us_per_request",
    "loadavg_1m_before",
    "loadavg_1m_after",
    # bench/idle.py
    "opened",
    "open_seconds",
    "server_rss_per_socket_kib",
    "server_cpu_seconds_open",
    "generator_cpu_seconds_open",
)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env: dict[str, str] = {}
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE,KEY=VALUE")
        env[key] = value
    return name, env


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if values:
            summary[key] = {
                "min": min(values),
                "median": statistics.median(values),
                "max": max(values),
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,...")
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- bench/x.py [args]")
    args = parser.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        parser.error("give the bench script after --")
    variants = [parse_variant(v) for v in args.variant] or [("default", {})]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for round_index in range(args.rounds):
        for name, env in variants:
            print(f"[rounds] round {round_index + 1}/{args.rounds}: {name}", file=sys.stderr)
            result = subprocess.run(
                [sys.executable, *script],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(
        json.dumps(
            {
                "bench": runs[variants[0][0]][0].get("bench"),
                "command": " ".join(script),
                "rounds": args.rounds,
                "variants": {
                    name: {"env": env, "summary": summarise(runs[name]), "runs": runs[name]}
                    for name, env in variants
                },
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
