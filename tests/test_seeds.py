import json

import pytest

from common.config import save_config
from common.errors import MmieError
from finetune.config import FinetuneConfig
from finetune.seeds import main, summarise


def write_run(path, seed, dev, test, lr=3e-4):
    cfg = FinetuneConfig()
    cfg.data.dir, cfg.train.seed, cfg.train.lr = "/data/twitter2015", seed, lr
    save_config(cfg, path / "config.yaml")
    per_type = {"PER": {"f1": test + 0.1}, "ORG": {"f1": test - 0.1}}
    (path / "metrics.json").write_text(json.dumps({"dev": {"f1": dev}, "test": {"f1": test, "per_type": per_type},
                                                   "epochs": 5, "best_epoch": 4, "wall_s": 100.0 + seed}))
    return path


def test_groups_by_config_without_the_seed(tmp_path, capsys):
    runs = [write_run(tmp_path / f"s{s}", s, d, t) for s, d, t in [(0, 0.70, 0.72), (1, 0.72, 0.74), (2, 0.71, 0.73)]]
    other = write_run(tmp_path / "lr", 0, 0.5, 0.5, lr=1e-3)
    groups = summarise(runs + [other])
    assert len(groups) == 2
    g = groups[0]
    assert g["seeds"] == [0, 1, 2] and g["test_f1"]["mean"] == pytest.approx(0.73)
    assert g["test_f1"]["std"] == pytest.approx(0.01) and g["test_f1"]["min"] == 0.72
    assert g["per_type_test_f1"]["PER"] == pytest.approx(0.83) and g["wall_s"] == pytest.approx(101.0)
    main([str(r) for r in runs])
    assert "73.00 ± 1.00 (72.00–74.00)" in capsys.readouterr().out


def test_unfinished_run_is_named(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(MmieError, match="half: no config.yaml"):
        summarise([tmp_path / "half"])
