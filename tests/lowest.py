"""``python tests/lowest.py constraints-lowest.txt``: print the pinned packages as installed
and fail when one differs from its pin (so `make test-lowest` tests what it says)."""

from __future__ import annotations

import importlib.metadata
import sys


def main(path: str) -> int:
    installed: list[str] = []
    wrong: list[str] = []
    with open(path) as pins:
        for line in pins:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, _, pin = line.partition("==")
            have = importlib.metadata.version(name)
            installed.append(f"{name}=={have}")
            if have != pin:
                wrong.append(f"{name}: pinned {pin}, installed {have}")
    print("lowest versions:", " ".join(installed))
    for problem in wrong:
        print("test-lowest:", problem, file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
