"""How much a bento's Python requirements weigh once installed, from this environment's installed packages.

    python -m bento.footprint requirements/bento.txt requirements/bento-tensorflow.txt

For each requirements file: the closure of its requirements and of segserve's own (the wheel in the bento),
each package's files as installed here, summed. It measures what pip would put in the image's site-packages;
the image adds the OS and Python on top (the same for every bento).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def closure(roots: list[str]) -> set[str]:
    """Installed distributions needed by the requirement strings ``roots``, transitively (markers honoured)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _name(req.name)
        if name in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req.name} is not installed here; run `make setup` first") from None
        seen.add(name)
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            extras_ok = sub_req.marker is None or any(
                sub_req.marker.evaluate({"extra": extra}) for extra in ("", *req.extras)
            )
            if extras_ok:
                todo.append(sub)
    return seen


def installed_bytes(names: set[str]) -> int:
    total = 0
    for name in names:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total


def requirements(path: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def main(argv: list[str]) -> int:
    print("| requirements | packages | installed size (MB) |\n|---|---:|---:|")
    for arg in argv:
        names = closure([*requirements(Path(arg)), "segserve"])
        print(f"| {arg} | {len(names)} | {installed_bytes(names) / 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
