"""Masked-language-model inputs for the image-grounded MLM pretraining term (`loss.mlm`, 0 turns it off).

Masks are a pure function of (seed, epoch, sample key): the same batch gets the same masks after a resume, every
epoch masks afresh (dynamic masking), and evaluation (epoch -1) sees the same masks every time. BERT's recipe:
each maskable token is chosen with probability `prob`; a chosen token becomes [MASK] 80% of the time, a random
token 10%, itself 10%; the loss is read at the chosen positions only (label -100 elsewhere).
"""
from __future__ import annotations

import random

import torch

from common.labels import IGNORE



def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, keys: list[str], active: list[bool],
                prob: float, mask_id: int, vocab_size: int, special_ids: set[int], seed: int,
                epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask (B, T); `active[i]` False leaves row i unmasked (all labels -100).
    Returns (masked input_ids, labels). A row with any maskable token gets at least one mask."""
    ids = input_ids.clone()
    labels = torch.full_like(input_ids, IGNORE)
    for i, (key, on) in enumerate(zip(keys, active)):
        if not on:
            continue
        rng = random.Random(f"{seed}:{epoch}:{key}")
        row = input_ids[i].tolist()
        maskable = [j for j, (t, m) in enumerate(zip(row, attention_mask[i].tolist()))
                    if m and t not in special_ids]
        chosen = [j for j in maskable if rng.random() < prob]
        if not chosen and maskable:
            chosen = [rng.choice(maskable)]
        for j in chosen:
            labels[i, j] = row[j]
            r = rng.random()
            if r < 0.8:
                ids[i, j] = mask_id
            elif r < 0.9:
                ids[i, j] = rng.randrange(vocab_size)
    return ids, labels
