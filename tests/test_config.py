from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from common.config import ConfigError, flatten, load_config, save_config, to_dict

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("mgipscl.yaml", "imm.yaml", "shapca.yaml", "promu.yaml")  # the papers' recipes


@dataclass
class Train:
    lr: float = 1e-3
    epochs: int = 3
    amp: bool = False
    schedule: Literal["cosine", "linear"] = "cosine"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    tag: Optional[str] = None


@dataclass
class Model:
    text: str = "minilm-l6"
    dim: int = 384


@dataclass
class Cfg:
    name: str = "x"
    train: Train = field(default_factory=Train)
    model: Model = field(default_factory=Model)


def write(tmp_path, data, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults_yaml_and_overrides(tmp_path):
    p = write(tmp_path, {"train": {"epochs": 5}, "model": {"text": "/models/bert"}})
    cfg = load_config(Cfg, p, ["train.lr=3e-4", "train.amp=true", "train.layers=[4, 5]", "name=run1",
                               "train.schedule=linear", "train.tag=none"])
    assert cfg.train.epochs == 5 and cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.amp is True and cfg.train.layers == [4, 5] and cfg.train.schedule == "linear"
    assert cfg.train.tag is None
    assert cfg.model.text == "/models/bert" and cfg.model.dim == 384 and cfg.name == "run1"


def test_int_accepted_for_float_but_not_reverse(tmp_path):
    assert load_config(Cfg, None, ["train.lr=1"]).train.lr == 1.0
    assert isinstance(load_config(Cfg, None, ["train.lr=1"]).train.lr, float)
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(Cfg, None, ["train.epochs=2.5"])


def test_round_trip(tmp_path):
    cfg = load_config(Cfg, None, ["train.lr=0.5", "train.tag=abc"])
    path = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(Cfg, path)
    assert again == cfg
    assert to_dict(again)["train"]["tag"] == "abc"


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, {"train": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, p)
    msg = str(e.value)
    assert "train.lrr" in msg and str(p) in msg and "lr" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="unknown key model.txt"):
        load_config(Cfg, None, ["model.txt=x"])


@pytest.mark.parametrize("override,expect", [
    ("train.amp=3", "expected true/false"),
    ("train.schedule=step", "is not one of"),
    ("model.dim=big", "expected an integer"),
    ("train.layers=[1, 'a']", r"train.layers\[1\]"),
    ("train=5", "expected a mapping"),
    ("notakey", "not of the form"),
])
def test_wrong_types_are_one_line_errors(override, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(Cfg, None, [override])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("train: {lr: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Cfg, p)


def test_flatten_for_mlflow():
    flat = flatten(load_config(Cfg, None, ["train.layers=[3]"]))
    assert flat["train.lr"] == 1e-3 and flat["model.text"] == "minilm-l6" and flat["train.layers"] == "3"
    assert all("." in k or k == "name" for k in flat)


def test_cli_prints_config_error_as_one_line(tmp_path, capsys):
    from common.errors import cli_main

    p = write(tmp_path, {"trian": {"lr": 0.1}})
    with pytest.raises(SystemExit) as e:
        cli_main(lambda argv: load_config(Cfg, p) and 0, [])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {p}: unknown key trian")


def test_a_config_file_starts_from_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ntrain:\n  lr: 0.5\n  epochs: 3\n")
    (tmp_path / "task.yaml").write_text("base: base.yaml\ntrain:\n  epochs: 7\n")
    cfg = load_config(Cfg, tmp_path / "task.yaml", ["train.layers=[1]"])
    assert (cfg.name, cfg.train.lr, cfg.train.epochs, cfg.train.layers) == ("base", 0.5, 7, [1])
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Cfg, tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml.*the base of"):
        load_config(Cfg, tmp_path / "orphan.yaml")


def test_every_finetune_task_config_loads_and_sets_its_task():
    from finetune.config import FinetuneConfig, task_config_path

    for task in ("mner", "mre", "mjere"):
        cfg = load_config(FinetuneConfig, task_config_path(task))
        assert cfg.task == task and cfg.train.epochs >= 3 and cfg.align.alpha == 0.2
        assert cfg.head.relation == ("markers" if task == "mre" else "wordpair")
        assert cfg.head.none_weight == (0.1 if task == "mjere" else 1.0)


def test_none_override_picks_a_literal_none_option():
    @dataclass
    class Data:
        image: Literal["on", "none"] = "on"

    assert load_config(Data, None, ["image=none"]).image == "none"  # `none` parses as null; the option is meant
    assert load_config(Cfg, None, ["model.text=none"]).model.text == "none"  # and for a plain string field
    with pytest.raises(ConfigError, match="is not one of"):
        load_config(Cfg, None, ["train.schedule=none"])


CONFIG_FILES = sorted(str(p) for d in ("finetune", "pretrain") for p in (REPO / d / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_every_config_file_loads(path):
    """Each file's keys and values pass the dataclasses' checks (a misspelt key in a preset is an error)."""
    from finetune.config import FinetuneConfig
    from pretrain.config import PretrainConfig

    cfg = load_config(FinetuneConfig if "finetune" in path else PretrainConfig, Path(path))
    if Path(path).name == "shapca.yaml":
        assert cfg.align.k == 0 and not cfg.head.text_channel_loss and cfg.fusion.bridge == "paper"
    if Path(path).name == "promu.yaml":
        assert cfg.loss.mlm == 0 and (cfg.loss.itm, cfg.loss.cit, cfg.loss.coe, cfg.loss.cir) == (1, 1, 1, 1)


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if Path(p).name not in PRESETS])
def test_config_files_hold_only_what_differs_from_what_they_extend(path):
    """One source of truth: a YAML key that restates the value it would have anyway (the dataclass default, or
    its base file's) is a second place to keep in step. The papers' presets are exempt: they pin every setting
    their paper states, so a later change of a default cannot change a paper's recipe."""
    from common.config import read_yaml
    from finetune.config import FinetuneConfig
    from pretrain.config import PretrainConfig

    cls = FinetuneConfig if "finetune" in path else PretrainConfig
    own = yaml.safe_load(Path(path).read_text()) or {}
    base = own.pop("base", None)
    inherited = to_dict(load_config(cls, Path(path).parent / base)) if base else to_dict(cls())
    same = [f"{k}.{k2}" for k, v in own.items() if isinstance(v, dict) for k2, v2 in v.items()
            if inherited.get(k, {}).get(k2) == v2]
    same += [k for k, v in own.items() if not isinstance(v, dict) and inherited.get(k) == v]
    assert not same, f"{path} restates {same}"
    assert read_yaml(path)  # and it reads


def test_an_option_that_no_head_reads_is_an_error_not_ignored():
    from finetune.config import FinetuneConfig
    load_config(FinetuneConfig, None, ["task=mre", "head.relation=markers", "head.marker_form=true"])
    for task, relation in (("mre", "wordpair"), ("mjere", "markers")):
        with pytest.raises(ConfigError, match="head.marker_form=true: only the MRE markers head"):
            load_config(FinetuneConfig, None, [f"task={task}", f"head.relation={relation}", "head.marker_form=true"])
    load_config(FinetuneConfig, None, ["task=mjere", "head.typed_decode=true"])
    for task in ("mner", "mre"):
        with pytest.raises(ConfigError, match="head.typed_decode=true: only MJERE's grid"):
            load_config(FinetuneConfig, None, [f"task={task}", "head.typed_decode=true"])
