"""An exponential moving average of the weights (`train.ema`), scored on dev beside the weights as trained after
every epoch; the better of the two is the epoch's candidate for the best model (finetune/trainer.py, end_epoch),
until the run's first steps weigh under 10% in the average (`settled`), when it is scored alone.

After optimizer step t the average is  A_t = d A_{t-1} + (1 - d) W_t  with A_0 = 0, read with the bias correction
A_t / (1 - d^t): a weighted mean of W_1 .. W_t with weights proportional to d^(t - s), so the first epoch's average
is not pulled towards zero or towards the initial weights (the correction Adam applies to its moments). Its horizon
is ~1 / (1 - d) steps. Floating-point parameters are averaged; buffers (batch-norm statistics, the CRF's fixed
masks) are the live model's. Averaging the last epochs' weights is the "checkpoint averaging" of machine translation;
a moving average does it every step, at the cost of one lerp over the parameters."""
from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.steps = 0
        self.names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
        params = dict(model.named_parameters())
        self.sums = [torch.zeros_like(params[n], memory_format=torch.contiguous_format).detach() for n in self.names]

    def _params(self, model: torch.nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n].detach() for n in self.names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold in the weights after one optimizer step."""
        self.steps += 1
        torch._foreach_lerp_(self.sums, self._params(model), 1.0 - self.decay)

    @torch.no_grad()
    def averaged(self) -> list[torch.Tensor]:
        if self.steps == 0:
            raise ValueError("no step has been averaged yet")
        scale = 1.0 / (1.0 - self.decay ** self.steps)
        return torch._foreach_mul(self.sums, scale)

    def first_horizon_share(self) -> float:
        """The weight of the first horizon's steps (W_1 .. W_h, h = 1 / (1 - d)) in the average now: after n > h
        steps, (d^(n - h) - d^n) / (1 - d^n); 1 while n <= h."""
        d, n, h = self.decay, self.steps, round(1.0 / (1.0 - self.decay))
        return 1.0 if n <= h else (d ** (n - h) - d ** n) / (1.0 - d ** n)

    def settled(self) -> bool:
        """Whether the first horizon's steps (a run's least trained weights) weigh under 10% in the average:
        d = 0.995 after ~580 steps. From then on the trainer scores the average alone."""
        return self.first_horizon_share() < 0.1

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block and its own weights again after it."""
        live = [p.clone() for p in self._params(model)]
        with torch.no_grad():
            torch._foreach_copy_(self._params(model), self.averaged())
        try:
            yield model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self._params(model), live)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "names": self.names, "sums": self.sums}

    def load_state_dict(self, state: dict) -> None:
        if state["names"] != self.names:
            raise ValueError("the checkpoint's weight average is over different parameters than this model")
        self.decay, self.steps = state["decay"], state["steps"]
        with torch.no_grad():
            torch._foreach_copy_(self.sums, state["sums"])
