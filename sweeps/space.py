"""Search spaces from YAML: dotted fine-tuning config keys -> Ray Tune distributions."""
from __future__ import annotations

from pathlib import Path

import yaml

from common.config import ConfigError, from_dict, set_dotted

KINDS = ("uniform", "loguniform", "choice", "randint", "grid")
METRIC = "dev_f1"  # what every trial reports and ASHA ranks on (the dev F1 of the task)


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
        probe = set_dotted({}, key, args[0], f"{path}: {key}")
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
