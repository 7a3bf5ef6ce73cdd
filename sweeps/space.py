"""Search spaces from YAML: dotted fine-tuning config keys -> Ray Tune distributions."""
from __future__ import annotations

from pathlib import Path

import yaml

from common.config import ConfigError, from_dict

KINDS = ("uniform", "loguniform", "choice", "randint", "grid")


def load_space(path: str | Path) -> dict:
    from ray import tune

    from finetune.config import FinetuneConfig

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space {path} does not exist")
    spec = yaml.safe_load(path.read_text()) or {}
    space = {}
    for key, dist in spec.items():
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in KINDS:
            raise ConfigError(f"{path}: {key}: expected one of {{{', '.join(k + ': ...' for k in KINDS)}}}")
        kind, args = next(iter(dist.items()))
        probe = {}
        node = probe
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = args[0]
        from_dict(FinetuneConfig, probe, str(path))  # the key must exist and take values of this kind
        if kind == "uniform":
            space[key] = tune.uniform(*args)
        elif kind == "loguniform":
            space[key] = tune.loguniform(*args)
        elif kind == "randint":
            space[key] = tune.randint(*args)
        elif kind == "choice":
            space[key] = tune.choice(list(args))
        else:
            space[key] = tune.grid_search(list(args))
    if not space:
        raise ConfigError(f"{path}: empty search space")
    return space
