"""finetune.curve: learning curves over nested training subsets."""
import json

import pytest

from common.errors import ConfigError
from finetune.curve import main as curve_main, parse_fractions
from finetune.subsets import nested_subset


def test_nested_subsets_are_nested_sized_and_seed_stable():
    n = 1000
    subsets = [set(nested_subset(n, f, seed=0)) for f in (0.05, 0.1, 0.25, 0.5, 1.0)]
    assert [len(s) for s in subsets] == [50, 100, 250, 500, 1000]
    assert all(a < b for a, b in zip(subsets, subsets[1:]))  # strictly nested
    assert nested_subset(n, 0.25, seed=0) == nested_subset(n, 0.25, seed=0)  # the same draw every time
    assert nested_subset(n, 0.25, seed=0) == sorted(nested_subset(n, 0.25, seed=0))  # original order kept
    assert set(nested_subset(n, 0.25, seed=1)) != subsets[2]  # another subset seed, another subset
    assert nested_subset(10, 0.01, seed=0) != [] and nested_subset(0, 0.5, seed=0) == []
    with pytest.raises(ValueError):
        nested_subset(10, 0.0, seed=0)


def test_fractions_are_checked():
    assert parse_fractions("1,0.1, 0.5") == [0.1, 0.5, 1.0]
    for bad in ("0,0.5", "1.5", "a,b", ""):
        with pytest.raises(ConfigError, match="--fractions"):
            parse_fractions(bad)


def test_curve_trains_nested_points_logs_one_parent_and_continues(synth_dir, tmp_path):
    out, mlruns = tmp_path / "curve", tmp_path / "mlruns"
    args = ["--task", "mner", "--data", str(synth_dir / "twitter"), "--init", "none", "--fractions", "0.5,1",
            "--seeds", "2", "--out", str(out), "--tracking-uri", str(mlruns), "train.epochs=1", "train.batch_size=8",
            "model.image_size=64"]
    assert curve_main(args) == 0
    r = json.loads((out / "curve.json").read_text())
    assert [(p["fraction"], p["seed"]) for p in r["points"]] == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    uids = {(p["fraction"], p["seed"]): (out / f"f{p['fraction']:g}-s{p['seed']}" / "train_uids.txt")
            for p in r["points"]}
    half = uids[0.5, 0].read_text().split()
    assert half == uids[0.5, 1].read_text().split()  # every seed trains on the same posts
    assert not uids[1.0, 0].exists()  # the whole split: nothing to list
    full = json.loads((out / "f1-s0" / "metrics.json").read_text())["n_train"]
    assert len(half) == round(0.5 * full) and r["rows"][0]["n_train"] == len(half) and r["rows"][1]["n_train"] == full
    assert (out / "curve.png").stat().st_size > 0 and "| 0.5 |" in (out / "curve.md").read_text()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mmie-finetune").experiment_id
    (parent,) = client.search_runs([exp], "tags.curve = 'true'")
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4
    assert parent.data.metrics["curve/test_f1_mean"] == pytest.approx(r["rows"][1]["test_f1"]["mean"])
    # run again: finished points are read back (same numbers, same parent run), a different config is refused
    assert curve_main(args) == 0
    again = json.loads((out / "curve.json").read_text())
    assert again["points"] == r["points"] and again["mlflow_run_id"] == r["mlflow_run_id"]
    with pytest.raises(ConfigError, match="another --out"):
        curve_main(args + ["train.lr=0.001"])
