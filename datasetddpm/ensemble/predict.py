"""Ensemble prediction: majority vote of the members and Jensen-Shannon uncertainty."""

from __future__ import annotations

import torch


def vote(logits: torch.Tensor) -> torch.Tensor:
    """(M, P, K) logits -> (P,) majority vote of the members' argmax (ties -> lowest class id)."""
    M, P, K = logits.shape
    votes = torch.zeros(P, K, dtype=torch.int32, device=logits.device)
    votes.scatter_add_(1, logits.argmax(-1).T, torch.ones(P, M, dtype=torch.int32, device=logits.device))
    return votes.argmax(1)  # first maximum = lowest id among ties


def js_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """(M, P, K) -> (P,) entropy of the mean softmax minus the mean of the members' entropies."""
    logp = torch.log_softmax(logits.float(), -1)
    p = logp.exp()
    member_entropy = -(p * logp).sum(-1).mean(0)
    mean_p = p.mean(0)
    mean_entropy = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum(-1)
    return (mean_entropy - member_entropy).clamp_min(0.0)


def image_uncertainty(pixel_uncertainty: torch.Tensor, top_fraction: float = 0.1) -> float:
    """An image's score: mean of its `top_fraction` most uncertain pixels."""
    flat = pixel_uncertainty.flatten()
    k = max(1, int(round(top_fraction * flat.numel())))
    return float(flat.topk(k).values.mean())


@torch.no_grad()
def predict_pixels(ensemble, features: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, D) features -> (P,) voted labels and (P,) JS uncertainty, in chunks of pixels."""
    ensemble.eval()
    labels, unc = [], []
    for i in range(0, features.shape[0], chunk):
        logits = ensemble(features[i:i + chunk])
        labels.append(vote(logits))
        unc.append(js_uncertainty(logits))
    return torch.cat(labels), torch.cat(unc)
