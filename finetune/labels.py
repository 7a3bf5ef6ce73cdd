"""Every label scheme of fine-tuning in one place: entity types, the BIO tags of MNER, MNRE's relation set, the
word-pair classes of MJERE, and what each task's classifier predicts."""
from __future__ import annotations

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
TAG_TYPES = {"PER": "PER", "LOC": "LOC", "ORG": "ORG", "MISC": "MISC", "OTHER": "MISC"}  # as the datasets spell them
NER_TAGS = ["O"] + [f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I")]
NONE_RELATION = "None"
MNRE_RELATIONS = (
    "None", "/per/per/parent", "/per/per/siblings", "/per/per/couple", "/per/per/neighbor", "/per/per/peer",
    "/per/per/charges", "/per/per/alumi", "/per/per/alternate_names", "/per/org/member_of",
    "/per/loc/place_of_residence", "/per/loc/place_of_birth", "/per/misc/present_in", "/per/misc/awarded",
    "/per/misc/race", "/per/misc/religion", "/per/misc/nationality", "/org/org/subsidiary",
    "/org/org/alternate_names", "/org/loc/locate_at", "/loc/loc/contain", "/loc/loc/alternate_names",
    "/misc/misc/part_of", "/misc/loc/held_on",
)


def joint_classes(relations: list[str]) -> list[str]:
    """MJERE's word-pair grid classes: none, the entity types (entity cells), then the relations (relation cells)."""
    return [NONE_RELATION] + list(ENTITY_TYPES) + sorted(relations)


def task_classes(task: str, train: list) -> list[str]:
    """The classes a task's model predicts: BIO tags, MNRE's relations, or MJERE's grid classes over the relations
    of the training examples."""
    if task == "mner":
        return NER_TAGS
    if task == "mre":
        return list(MNRE_RELATIONS)
    return joint_classes(sorted({t.label for ex in train for t in ex.triples}))
