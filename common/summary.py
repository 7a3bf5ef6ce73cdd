"""python -m common.summary RUN_DIR — print what a demo run produced, from the JSON files it wrote."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import MmieError, cli_main


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summarise(run: Path) -> list[str]:
    if not run.is_dir():
        raise MmieError(f"run directory {run} does not exist (run `make demo` first)")
    lines = [f"mmie demo summary — {run}"]
    stats = _load(run / "data" / "stats.json")
    if stats:
        news = sum(s["pairs"] for s in stats["newsclippings"].values())
        tweets = sum(s["tweets"] for s in stats["twitter"].values())
        mnre = sum(s["lines"] for s in stats["mnre"].values())
        tw, mn = stats["twitter"]["test"], stats["mnre"]["test"]
        lines.append(f"  data      {run / 'data'}: {news} NewsCLIPpings pairs, {tweets} tweets, {mnre} MNRE lines "
                     f"(seed {stats['config']['seed']})")
        lines.append(f"            text-only ceiling (test): MNER typing {tw['text_only_ceiling']:.3f}, "
                     f"MNRE {mn['text_only_ceiling']:.3f} — the image is needed above these")
    zoo = _load(run / "zoo.json")
    if zoo:
        t = zoo["text"]
        lines.append(f"  zoo       text {t['name']} (dim {t['dim']}); vision "
                     + ", ".join(f"{v['name']}{' [random init]' if v['warnings'] else ''}" for v in zoo["vision"])
                     + f"; spaCy {zoo['spacy']['name']}")
        for v in zoo["vision"]:
            if "top3" in v:
                lines.append(f"            {v['name']} on {Path(zoo['image']).name}: {v['top3'][0][0]} "
                             f"({v['top3'][0][1]:.2f})")
    if len(lines) == 1:
        lines.append("  (nothing yet)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.summary", description=__doc__)
    p.add_argument("run", type=Path)
    a = p.parse_args(argv)
    print("\n".join(summarise(a.run)))
    return 0


if __name__ == "__main__":
    cli_main(main)
