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


def test_versus_gives_the_difference_with_a_paired_bootstrap_interval(tmp_path, capsys):
    a = [write_run(tmp_path / f"a{s}", s, 0.7, t) for s, t in [(0, 0.75), (1, 0.76), (2, 0.74)]]
    b = [write_run(tmp_path / f"b{s}", s, 0.6, t, lr=1e-3) for s, t in [(0, 0.72), (1, 0.74), (2, 0.73)]]
    main([str(r) for r in a] + ["--versus"] + [str(r) for r in b])
    out = capsys.readouterr().out
    # per-seed differences 3, 2, 1 points: mean +2.00; the bootstrap of their mean lies within [1, 3]
    assert "test F1, A − B: +2.00 (95% bootstrap interval +1.00 to +3.00; paired over seeds)" in out
    assert "dev F1, A − B: +10.00" in out


def test_versus_unpaired_and_mixed_groups(tmp_path):
    from finetune.seeds import bootstrap_difference, compare

    d = bootstrap_difference({0: 0.5, 1: 0.6}, {5: 0.5, 6: 0.5, 7: 0.5})
    assert not d["paired"] and d["diff"] == pytest.approx(0.05) and d["low"] == pytest.approx(0.0)
    assert d["high"] == pytest.approx(0.1)
    mixed = [write_run(tmp_path / "m0", 0, 0.7, 0.7), write_run(tmp_path / "m1", 1, 0.7, 0.7, lr=1e-3)]
    with pytest.raises(MmieError, match="group A: its 2 runs hold 2 configurations"):
        compare(mixed, mixed[:1])
