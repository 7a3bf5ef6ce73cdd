"""Fine-tuning config: YAML in finetune/configs/ + dotted overrides; the CLI flags (--task, --data, --init, ...)
are shorthands for the fields of the same names. configs/default.yaml holds what every task shares; configs/<task>.yaml
starts from it (`base: default.yaml`) and sets what suits the task (epochs, patience), and is what `--task` picks
when no `--config` is given."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.config import check_ranges
from common.errors import ConfigError
from common.fusion import ModelConfig
from finetune.context import MIN_PROB, TOP_K


@dataclass
class DataConfig:
    dir: str = ""  # dataset directory in the real layout
    images: str = ""  # image root; "" = <dir>/images when it exists, else every image is missing
    context: str = "offline"  # offline | none | file:<json>
    context_top_k: int = TOP_K  # offline context: name up to this many ImageNet classes of the picture ...
    context_min_prob: float = MIN_PROB  # ... each with at least this probability
    missing_context: Literal["none", "generic"] = "generic"  # the context of a post whose picture is missing or
    # unreadable: none | the generic "No picture is available for this post." (finetune/context.py)
    image: Literal["on", "none"] = "on"  # "none": text-only ablation (default image, no image-derived context)
    max_length: int = 128  # sub-tokens of the text segment ([CLS] text [SEP]); words past it are cut and reported
    max_context_length: int = 128  # sub-tokens of the context segment (context [SEP]), its own budget: a long
    # generated description is cut here (reported as contexts_truncated) and never cuts the text; 0: no context
    max_train: int = 0  # use only the first N training examples (0 = all)
    train_fraction: float = 1.0  # train on this share of train, a random subset nested across fractions (subsets.py)
    subset_seed: int = 0  # which subset; independent of train.seed, so every seed trains on the same posts
    markers: Literal["tokens", "punct"] = "tokens"  # MRE entity markers: [unusedN] tokens | brackets (batches.py)
    retrieve: int = 0  # > 0: append each post's K most similar training posts to its context (finetune/retrieval.py)
    retrieve_as: Literal["text", "labelled", "entities"] = "text"  # ... as their words | their words with the gold
    # entity types written in ("Durant (person)") | only their typed gold entities

    def __post_init__(self):
        check_ranges("data", self, {"max_length": (8, 512), "max_context_length": (0, 504), "max_train": (0, None),
                                    "retrieve": (0, 64), "context_top_k": (1, 1000),
                                    "context_min_prob": (0.0, 1.0), "train_fraction": (1e-6, 1.0)})
        if self.max_length + self.max_context_length > 512:
            raise ConfigError(f"data.max_length + data.max_context_length = "
                              f"{self.max_length + self.max_context_length} sub-tokens: the text encoder has 512 "
                              f"positions")


@dataclass
class AlignConfig:
    method: Literal["shapley", "infonce", "none"] = "shapley"
    alpha: float = 0.2  # weight of L_semantic (context <-> text)
    beta: float = 0.2  # weight of L_modality (context <-> image)
    k: int = 3  # implicit positives per text (MGIPS-CL); 0 disables the term
    ips_weight: float = 0.1
    tau: float = 0.1
    proj_dim: int = 256
    sw_weight: float = 0.0  # IMM's gamma (Eq. 25-26): weight of its semantic-wise loss (needs fusion.kind imm)
    sw_sentence: float = 1.0  # IMM's alpha (Eq. 14): the sentence-level term of L_SW
    sw_word: float = 1.0  # IMM's beta (Eq. 14): the word-level term
    teacher: str = "label-bridge"  # IMM's pseudo-signal (Eq. 5): label-bridge (offline) | clip:<arch>:<weights>


@dataclass
class FusionConfig:
    """How the token states meet the image after the encoder (finetune/fusions/: one file per kind)."""
    kind: str = "adaptive"  # adaptive (Shap-CA's gated fusion) | none | mgi (MGIPS-CL's interweave)
    heads: int = 4  # attention heads of the fusion's attention layers
    bridge: Literal["attention", "paper"] = "attention"  # adaptive: the bridging term B (fusions/adaptive.py)
    mutual_layers: int = 1  # mgi: mutual-attention layers (MGIPS-CL Eq. 2-4) before the interweave
    interweave_layers: int = 1  # mgi: Interweave Encoder layers (Eq. 10-11); the paper found one best
    granularity: Literal["both", "row", "column"] = "both"  # mgi: MGE's maps (Eq. 6); row/column = its ablations
    isa_layers: int = 2  # imm: visual-text transformer blocks (IMM's L_VT, Eq. 3-4)
    ia_layers: int = 2  # imm: Insert-Activation blocks (L_IA, Eq. 15-21)
    ia_slots: int = 1  # imm: visual key/value slots inserted per text token into the text FFN (0: a plain FFN)

    def __post_init__(self):
        from finetune.fusions import FUSIONS

        if self.kind not in FUSIONS:
            raise ConfigError(f"fusion.kind: unknown fusion {self.kind!r}; known: {', '.join(sorted(FUSIONS))}")
        check_ranges("fusion", self, {"heads": (1, None), "mutual_layers": (0, None), "interweave_layers": (1, None),
                                      "isa_layers": (0, None), "ia_layers": (0, None), "ia_slots": (0, None)})


@dataclass
class HeadConfig:
    hidden: int = 512
    pos_dim: int = 100  # the word's form embedding: part of speech (+ shape, spaCy entity tag, character CNN)
    word_shape: bool = True  # embed each word's casing/shape (the uncased encoder cannot see it)
    spacy_entities: bool = False  # embed spaCy's entity guess per word (BIO over OntoNotes types; finetune/pos.py)
    char_dim: int = 0  # > 0: a character CNN over each cased word (this many filters, width 3, max-pooled); 0: off
    position_dim: int = 100
    max_positions: int = 256  # word-position embeddings; later words share the last one
    lam: float = 1.0  # lambda of the word-pair contrastive decoding
    text_channel_loss: bool = True  # word-pair head: also the NLL of the text channel P^t (Shap-CA's Eq. 18 has
    # only P_final; the extra term is mmie's, shapca.yaml turns it off)
    dropout: float = 0.1
    relation: Literal["wordpair", "markers", "cls"] = "wordpair"  # MRE: word-pair head's marked cell |
    # [<h>; <t>] -> linear | the fused [CLS] state -> linear (IMM's RE head, its Eq. 24)
    marker_form: bool = False  # MRE markers head: also read the form embedding (POS, shape, + head.spacy_entities:
    # spaCy's entity guess) of each span's first word beside the <h>/<t> states: [<h>; <t>; form(h1); form(t1)]
    typed_decode: bool = False  # MJERE: choose entity types and relations together, under the (head type, tail
    # type) pairs each relation has in training (wordpair.decode_joint_typed); false: each cell's own argmax
    none_weight: float = 1.0  # MRE/MJERE: the loss weight of the `None` class (1 = unweighted)
    entity_tagger: float = 0.0  # MJERE: > 0 adds a BIO tagger over the same word states (MNER's emission layers +
    # CRF) trained on the gold entities, its per-word NLL at this weight beside the grid's loss; an auxiliary task
    # only: decoding still reads the grid
    tune_none: bool = True  # MRE/MJERE: choose on dev the margin by which `None` must win (calibration.py)
    label_smoothing: float = 0.0  # MNER: > 0 adds, per word, this times the cross-entropy of the emission softmax
    # against the uniform distribution (label smoothing's extra term, on the CRF's emissions; the CRF NLL stays whole)
    bio_constraints: bool = False  # MNER (and MJERE's tagger): the CRF gives no probability to invalid BIO paths
    # (I-X only after B-X or I-X), and MNER trains on valid BIO (an entity's first word B-, however the file spells
    # it; the entities are the same under seqeval's lenient chunking, which scores them)

    def __post_init__(self):
        check_ranges("head", self, {"hidden": (1, None), "pos_dim": (1, None), "char_dim": (0, None),
                                    "position_dim": (1, None),
                                    "max_positions": (1, None), "dropout": (0.0, 0.99), "none_weight": (1e-6, None),
                                    "entity_tagger": (0.0, None), "label_smoothing": (0.0, 1.0)})


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-4  # heads and projections
    encoder_lr: float = 1e-4  # text and vision encoders and the fusion layers copied from the text encoder
    vision_lr: float = -1.0  # the vision encoder's own learning rate; < 0: encoder_lr
    crf_lr: float = 5e-3  # CRF start/end/transition scores
    layer_decay: float = 1.0  # < 1: layer-wise learning-rate decay on the text path, encoder_lr at its top layer,
    # times layer_decay per layer further down (the embeddings lowest); the vision encoder keeps its own rate.
    # 0.8 on Twitter-2015 (3 seeds) and MJERE (1 seed) gained nothing (README, "Session 46")
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    clip: float = 1.0
    patience: int = 3  # epochs without a better dev F1 before stopping
    seed: int = 0
    eval_batch_size: int = 64
    bucket_pool: int = 0  # >0: sort each run of this many shuffled batches by length (less padding); 0: plain shuffle
    threads: int = 0  # torch threads; 0 = torch's default (every core)
    ema: float = 0.0  # > 0: a moving average of the weights with this decay per step (finetune/ema.py; horizon
    # ~1 / (1 - ema) steps) is scored on dev beside the weights as trained, the better is each epoch's candidate;
    # once the first horizon weighs under 10% in the average (0.995: ~580 steps) the average alone is scored
    attention_dropout: float = -1.0  # dropout on the text encoder's and fusion layers' attention weights; < 0: the
    # encoder's own (MiniLM-L6: 0.1). At 0 a step draws no dropout masks for the attention weights (README,
    # "Session 42")
    keep_checkpoints: bool = False  # keep <run>/checkpoints/ after a run finishes (--resume needs them until then)

    def __post_init__(self):
        check_ranges("train", self, {"epochs": (1, None), "batch_size": (1, None), "eval_batch_size": (1, None),
                                     "lr": (1e-12, None), "encoder_lr": (0.0, None), "crf_lr": (0.0, None),
                                     "layer_decay": (1e-6, 1.0), "weight_decay": (0.0, None),
                                     "warmup_ratio": (0.0, 0.99), "clip": (1e-12, None),
                                     "patience": (1, None), "bucket_pool": (0, None), "threads": (0, None),
                                     "ema": (0.0, 0.99999), "attention_dropout": (-1.0, 0.99)})


@dataclass
class FinetuneConfig:
    name: str = "finetune"
    task: Literal["mner", "mre", "mjere"] = "mner"
    init: str = "none"  # an export directory (pretrained FusionEncoder) or "none" (the zoo weights)
    experiment: str = "mmie-finetune"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)  # used with init none
    fusion: FusionConfig = field(default_factory=FusionConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.align.sw_weight > 0 and self.fusion.kind != "imm":
            raise ConfigError(f"align.sw_weight={self.align.sw_weight}: IMM's SW loss reads the imm fusion's ISA "
                              f"states; set fusion.kind=imm (it is {self.fusion.kind!r})")
        if self.head.typed_decode and self.task != "mjere":
            raise ConfigError(f"head.typed_decode=true: only MJERE's grid decodes entity types with relations; set "
                              f"--task mjere (it is {self.task!r})")
        if self.head.marker_form and (self.task != "mre" or self.head.relation != "markers"):
            raise ConfigError(f"head.marker_form=true: only the MRE markers head reads it; set --task mre and "
                              f"head.relation=markers (they are {self.task!r}, {self.head.relation!r})")


CONFIG_DIR = Path(__file__).with_name("configs")


def task_config_path(task: str | None) -> Path:
    """configs/<task>.yaml for a known task, else configs/default.yaml."""
    path = CONFIG_DIR / f"{task}.yaml"
    return path if task and path.is_file() else CONFIG_DIR / "default.yaml"
