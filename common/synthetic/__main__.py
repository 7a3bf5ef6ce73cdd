"""python -m common.synthetic --out DIR [--seed S] [--news N] [--twitter N] [--mnre N] [--image-size PX]"""
from __future__ import annotations

import argparse
import time

from common.errors import cli_main
from common.synthetic.generate import SynthConfig, generate


def main(argv: list[str] | None = None) -> int:
    defaults = SynthConfig()
    p = argparse.ArgumentParser(prog="python -m common.synthetic", description=__doc__)
    p.add_argument("--out", required=True, help="output directory (newsclippings/, twitter/, mnre/, stats.json)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--news", type=int, default=defaults.news, help="VisualNews items (2 NewsCLIPpings pairs each)")
    p.add_argument("--twitter", type=int, default=defaults.twitter, help="tweets over train/valid/test")
    p.add_argument("--mnre", type=int, default=defaults.mnre, help="MNRE sentences over train/val/test")
    p.add_argument("--image-size", type=int, default=defaults.image_size)
    p.add_argument("--image-resolved", type=float, default=defaults.image_resolved,
                   help="share of main mentions whose type only the image tells")
    a = p.parse_args(argv)
    if min(a.news, a.twitter, a.mnre) < 3:
        p.error("each dataset needs at least 3 items (one per split)")
    cfg = SynthConfig(seed=a.seed, news=a.news, twitter=a.twitter, mnre=a.mnre, image_size=a.image_size,
                      image_resolved=a.image_resolved)
    t0 = time.perf_counter()
    stats = generate(cfg, a.out)
    tw, mn = stats["twitter"]["test"], stats["mnre"]["test"]
    print(f"synthetic data in {a.out} ({time.perf_counter() - t0:.1f}s, seed {a.seed}): "
          f"{sum(s['pairs'] for s in stats['newsclippings'].values())} NewsCLIPpings pairs, "
          f"{sum(s['tweets'] for s in stats['twitter'].values())} tweets, "
          f"{sum(s['lines'] for s in stats['mnre'].values())} MNRE lines")
    print(f"text-only ceiling built in (test): MNER entity typing {tw['text_only_ceiling']:.3f} "
          f"({tw['image_resolved']}/{tw['entities']} mentions resolved only by the image); "
          f"MNRE relation accuracy {mn['text_only_ceiling']:.3f}")
    return 0


if __name__ == "__main__":
    cli_main(main)
