"""Pretraining config: the one source of truth (YAML in pretrain/configs/, dotted overrides after it). The
DeepSpeed JSON named by `deepspeed` holds engine features only (ZeRO stage, offload, precision)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.config import check_ranges
from common.fusion import ModelConfig


@dataclass
class PrepareConfig:
    """`python -m pretrain.prepare`: its flags are these fields (--top-k is top_k), read as dotted overrides."""
    annotations: str = ""  # NewsCLIPpings annotations/<split>.json
    data_json: str = ""  # VisualNews data.json (id -> caption, image_path)
    images: str = ""  # root that data.json's image paths are relative to
    out: str = ""  # shard directory
    teacher: str = "label-bridge"  # label-bridge | clip:<arch>:<weights.pt>
    detector: str = "crops"  # crops | yolo:<weights.pt>
    entities: int = 1000  # M: entity vocabulary size (top spaCy nouns)
    relations: str = ""  # relation names, one per line ("": pretrain/relations.txt)
    vocab: str = ""  # reuse this vocab.json (e.g. the train split's for val)
    top_k: int = 5  # soft-label entries kept per box / image (renormalised when read); 0: the full distribution
    # over every entity / relation, as PROMU trains on (configs/promu.yaml; M floats per box in the shards)
    max_boxes: int = 6
    shard_size: int = 1000  # samples per shard (0 wrote one shard per sample with a manifest of zeros)
    batch_size: int = 64  # pairs per teacher batch
    teacher_size: int = 224  # image size the label-bridge teacher sees
    tau: float | None = None  # teacher temperature (None: the teacher's own)
    backend: Literal["inline", "process", "ray"] = "inline"  # who runs the units (pretrain/backends.py); the bytes
    # written are the same whichever
    workers: int = 2  # process / ray: workers, each loading the models once
    threads: int = 1  # torch threads per worker (inline too): pinned, so the teacher's floats never depend on it
    ray_address: str = ""  # ray: a running cluster ("auto", "HOST:6379"); "" starts a local Ray for the run
    resume: bool = False  # continue a killed run: finished units in the staging directory are kept

    def __post_init__(self):
        check_ranges("prepare", self, {"entities": (1, None), "top_k": (0, None), "max_boxes": (0, None),
                                       "shard_size": (1, None), "batch_size": (1, None), "teacher_size": (32, None),
                                       "workers": (1, None), "threads": (1, None)})


@dataclass
class DataConfig:
    train: str = "runs/demo/shards/train"  # shard directory (manifest.json, vocab.json, shard-*.tar)
    val: str = ""  # held-out shard directory; "" skips evaluation
    batch_size: int = 16  # per rank, per micro-step
    num_workers: int = 0
    shuffle_buffer: int = 256
    resampled: bool = False  # sample shards with replacement (ranks overlap by design)
    max_boxes: int = 6
    max_text_len: int = 48
    audit_keys: bool = False  # write every consumed sample key to <run>/audit/ (checks resume exactness)


@dataclass
class LossConfig:
    itm: float = 1.0  # lambda of each term
    cit: float = 1.0
    coe: float = 1.0
    cir: float = 1.0
    mlm: float = 1.0  # image-grounded masked language modelling on matched pairs; not one of PROMU's four terms
    # (0 gives PROMU's recipe) but it keeps the text states fit for tagging: README, "pretrained init" table
    mlm_prob: float = 0.15  # share of caption tokens masked (BERT's 80/10/10 recipe)
    tau: float = 0.07  # initial CIT temperature
    learn_tau: bool = True
    proj_dim: int = 256


@dataclass
class TrainConfig:
    steps: int = 200  # optimizer steps
    lr: float = 1e-4  # heads, fusion layers and projections
    encoder_lr: float = 2e-5  # pretrained text and vision encoders
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_accum: int = 1
    clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 20
    ckpt_every: int = 100
    dist_timeout_s: int = 600  # a collective waiting longer than this for another rank fails instead of hanging


@dataclass
class PretrainConfig:
    name: str = "pretrain"
    deepspeed: str = "pretrain/configs/ds/zero2.json"
    experiment: str = "mmie-pretrain"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
