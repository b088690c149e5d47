"""How far a quantized model's next-token distribution moves from its 16-bit model's.

The 16-bit model's evaluation keeps, for every predicted position, its top-`TOPK` log-probabilities
and their token ids (`TopK`); a quantized model's evaluation of the same token ids, windows and
positions (qid.evaluate.windows) compares its own distribution with them (`Divergence`):

- KL(p16 || pq) per position, on the vocabulary coarse-grained into the 16-bit model's top-k tokens
  plus one bin holding the rest of the mass. Coarse-graining never increases a KL (data
  processing), so this is a lower bound of the full KL that is exact when k >= the vocabulary,
  >= 0, and exactly 0 for a model against itself. Its memory is positions x (8k + 4) bytes on
  the CPU (int32 id + float32 log-probability, and the rest's mass), not positions x vocabulary.
- top-1 agreement: the share of positions where the 16-bit model's most likely token is also a
  most likely token of the quantized model (ties count as agreement).
- QiD in bits per byte: the NLL difference summed over the texts / ln 2 / the texts' UTF-8 bytes,
  which no tokenizer changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

TOPK = 64  # 516 bytes per position: ~1 GB for 2M eval tokens (see README, "Sharper measures")

Key = tuple[int, int]  # (text, window) of qid.evaluate.windows


def _valid(mask: torch.Tensor) -> torch.Tensor:
    """The positions that predict a real next token: a real position that is not its row's last."""
    valid = torch.zeros_like(mask, dtype=torch.bool)
    valid[:, :-1] = (mask[:, 1:] == 1) & (mask[:, :-1] == 1)
    return valid


@dataclass
class TopK:
    """The 16-bit model's top-k log-probabilities per window, filled as it is evaluated."""

    k: int = TOPK
    windows: dict[Key, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=dict
    )
    nll_per_text: np.ndarray | None = None  # the 16-bit NLL per text, set once it is scored

    def batch(self, logprobs: torch.Tensor, mask: torch.Tensor, keys: list[Key]) -> None:
        """Keep the top-k of `logprobs` ([batch, width, vocabulary], overwritten)."""
        top, ids = logprobs.topk(min(self.k, logprobs.shape[-1]), dim=-1)
        tail = _tail(logprobs, ids)
        lengths = _valid(mask).sum(dim=1).tolist()
        for row, key in enumerate(keys):
            n = lengths[row]
            ids_row = ids[row, :n].to(torch.int32).cpu()
            self.windows[key] = (top[row, :n].cpu(), ids_row, tail[row, :n].cpu())

    @property
    def nbytes(self) -> int:
        return sum(sum(t.nbytes for t in w) for w in self.windows.values())


def _tail(logprobs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The mass outside the bins `ids`, summed over the other tokens (1 - the bins' sum would
    cancel to float32 rounding, which a near-0 bin of the other model magnifies). Overwrites
    `logprobs`, its memory reused."""
    probs = logprobs.exp_().scatter_(-1, ids, 0.0)
    return probs.sum(dim=-1)


class Divergence:
    """KL from the reference and top-1 agreement, per text, of the model evaluated now."""

    def __init__(self, reference: TopK, texts: int):
        self.reference = reference
        self.kl = np.zeros(texts)
        self.agree = np.zeros(texts)
        self.positions = np.zeros(texts)

    def batch(self, logprobs: torch.Tensor, mask: torch.Tensor, keys: list[Key]) -> None:
        """Add the KL and agreement of `logprobs` ([batch, width, vocabulary], overwritten)."""
        valid = _valid(mask)
        lengths = valid.sum(dim=1).tolist()
        k = self.reference.k if logprobs.shape[-1] > self.reference.k else logprobs.shape[-1]
        top16 = torch.zeros(*valid.shape, k, device=logprobs.device)
        ids16 = torch.zeros(*valid.shape, k, dtype=torch.long, device=logprobs.device)
        tail16 = torch.zeros(*valid.shape, device=logprobs.device)
        for row, key in enumerate(keys):
            top, ids, tail = self.reference.windows[key]
            if len(top) != lengths[row]:
                raise ValueError(
                    f"window {key} has {len(top)} reference positions, not {lengths[row]}"
                )
            top16[row, : lengths[row]] = top.to(logprobs.device)
            ids16[row, : lengths[row]] = ids.to(logprobs.device)
            tail16[row, : lengths[row]] = tail.to(logprobs.device)
        topq = logprobs.gather(-1, ids16)
        # amax: the maximum without its indices (max's values, 6x faster on a CPU).
        agree = (topq[..., 0] >= logprobs.amax(dim=-1)) & valid
        tailq = _tail(logprobs, ids16).clamp_min(torch.finfo(torch.float32).tiny)
        kl = (top16.exp() * (top16 - topq)).sum(dim=-1)
        kl = kl.double() + (torch.xlogy(tail16, tail16) - torch.xlogy(tail16, tailq)).double()
        # >= 0 in exact arithmetic; the clamp only removes float rounding of a near-0 sum.
        kl = kl.clamp_min(0.0).masked_fill(~valid, 0.0)
        text = [t for t, _ in keys]
        np.add.at(self.kl, text, kl.sum(dim=1).cpu().numpy())
        np.add.at(self.agree, text, agree.sum(dim=1).double().cpu().numpy())
        np.add.at(self.positions, text, lengths)

    def summary(self, nll_per_text: np.ndarray, utf8_bytes: int) -> dict:
        """The eval record's keys: kl (mean per position, nats) and its standard error over
        texts (as qid.aggregate.paired_se), top1_agreement, qid_bpb, kl_topk."""
        positions = self.positions.sum()
        se = math.sqrt(len(self.kl)) * self.kl.std(ddof=1) / positions if len(self.kl) > 1 else None
        diff = float(np.sum(nll_per_text) - np.sum(self.reference.nll_per_text))
        return {
            "kl": float(self.kl.sum() / positions),
            "kl_se": None if se is None else float(se),
            "top1_agreement": float(self.agree.sum() / positions),
            "qid_bpb": diff / math.log(2) / utf8_bytes,
            "kl_topk": self.reference.k,
        }
