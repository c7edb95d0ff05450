"""The issue-12 bench suite: every figure of docs/PERFORMANCE.md in one run.

Runs bench/rounds.py for each case (``--rounds`` rounds, each against a freshly started
server; SQLite and PostgreSQL interleaved as variants of the same case, so both are
measured by the same generator in the same run), writes one JSON file per case into
``--out`` and prints a Markdown table of median [min-max] figures with the generator's
CPU share, the server's CPU per delivery or request and the load average.

    python bench/suite.py --out bench/results/$(date -u +%Y%m%dT%H%MZ)
    python bench/suite.py --only history,login --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REDIS = os.environ.get("DIALTONE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
DBS = ["sqlite:DIALTONE_BENCH_DB=sqlite", "postgres:DIALTONE_BENCH_DB=postgres"]
WORKERS = [
    "1 worker:DIALTONE_BENCH_DB=postgres",
    "2 workers:DIALTONE_BENCH_DB=postgres,DIALTONE_WORKERS=2,"
    f"DIALTONE_REDIS_URL={REDIS},DIALTONE_REDIS_PREFIX=dialtone-bench:,"
    "DIALTONE_CLUSTER_SECRET=dialtone-bench-cluster-secret-0123456789",
]

CASES: dict[str, tuple[list[str], list[str], str]] = {
    # name: (variants, bench command, figure kind)
    "fanout-c200": (DBS, ["ws_fanout.py", "-C", "200", "-S", "4", "-M", "250"], "fanout"),
    "fanout-c1000": (DBS, ["ws_fanout.py", "-C", "1000", "-S", "1", "-M", "100"], "fanout"),
    "fanout-fixed-20k": (
        DBS,
        ["ws_fanout.py", "-C", "200", "-S", "4", "-M", "250", "--rate", "25"],
        "fanout",
    ),
    "history": (DBS, ["history.py"], "http"),
    "login": (DBS, ["login.py"], "http"),
    # 10 000 authenticated idle sockets (issue 12 item 6): memory per socket.
    "idle-10k": (["sqlite:DIALTONE_BENCH_DB=sqlite"], ["idle.py", "-C", "10000"], "idle"),
    "workers-fanout-c200": (
        WORKERS,
        ["ws_fanout.py", "-C", "200", "-S", "4", "-M", "250"],
        "fanout",
    ),
}

FIGURES = {
    "fanout": [
        ("deliveries_per_s", "deliveries/s"),
        ("p99_ms", "p99 ms"),
        ("deliveries_lost", "lost"),
        ("server_us_per_delivery", "server µs/delivery"),
        ("server_cpu_pct", "server CPU %"),
        ("generator_cpu_pct", "generator CPU %"),
        ("loadavg_1m_before", "load before"),
    ],
    "idle": [
        ("server_rss_per_socket_kib", "server KiB/socket"),
        ("opened", "sockets open"),
        ("open_seconds", "seconds to open"),
        ("server_cpu_seconds_open", "server CPU s (opening)"),
        ("generator_cpu_seconds_open", "generator CPU s (opening)"),
        ("loadavg_1m_before", "load before"),
    ],
    "http": [
        ("req_per_s", "req/s"),
        ("p99_ms", "p99 ms"),
        ("server_us_per_request", "server µs/request"),
        ("server_cpu_pct", "server CPU %"),
        ("generator_cpu_pct", "generator CPU %"),
        ("loadavg_1m_before", "load before"),
    ],
}


def cell(summary: dict[str, Any], key: str) -> str:
    figure = summary.get(key)
    if not figure:
        return "-"

    def fmt(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:g}"

    return f"{fmt(figure['median'])} [{fmt(figure['min'])}-{fmt(figure['max'])}]"


def table(name: str, result: dict[str, Any], kind: str) -> str:
    heads = [label for _, label in FIGURES[kind]]
    lines = [
        f"**{name}** (`{result['command'].replace(str(HERE.parent) + '/', '')}`, "
        f"{result['rounds']} rounds)",
        "",
        "| variant | " + " | ".join(heads) + " |",
        "| --- |" + " --- |" * len(heads),
    ]
    for variant, data in result["variants"].items():
        cells = [cell(data["summary"], key) for key, _ in FIGURES[kind]]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated case names: " + ",".join(CASES))
    parser.add_argument("--summarise", action="store_true", help="only print the tables")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    args.out.mkdir(parents=True, exist_ok=True)
    tables = []
    for name in names:
        variants, command, kind = CASES[name]
        path = args.out / f"{name}.json"
        if not args.summarise:
            print(f"[suite] {name}", file=sys.stderr, flush=True)
            argv = [sys.executable, str(HERE / "rounds.py"), "-n", str(args.rounds)]
            for variant in variants:
                argv += ["--variant", variant]
            argv += ["--", str(HERE / command[0]), *command[1:]]
            with path.open("w") as out:
                done = subprocess.run(argv, stdout=out, check=False)
            if done.returncode != 0:
                print(f"[suite] {name} failed ({done.returncode})", file=sys.stderr, flush=True)
                continue
        if path.exists() and path.stat().st_size:
            tables.append(table(name, json.loads(path.read_text()), kind))
    print("\n".join(tables))


if __name__ == "__main__":
    main()
