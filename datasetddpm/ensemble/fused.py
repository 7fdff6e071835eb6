"""Fast labelling: the ensemble's first layer applied at each feature map's native resolution.

Bilinear upsampling is linear and its weights sum to 1, so for fc1 (weight W, bias b)

    W · up(F) + b = up(W · F) + b,

and with the maps concatenated, W · concat(F_k) = sum_k W_k · F_k over the row blocks W_k of W.
Instead of building the (d, H, W) feature tensor and multiplying every pixel by a (d, M·h1) matrix,
`FusedHead` multiplies each map at its own resolution (~22x fewer FLOPs at the paper's LSUN shapes)
and upsamples only the (M·h1)-channel results; maps of one resolution are summed first (linearity
again), so there is one upsampling per distinct resolution. The eval-mode BatchNorms are folded
into the next linear layer; fc2 and fc3 are one batched matmul each over all members.

Why whole images (small images batched) and not cache-sized row tiles: on the busy 2-core machine
this was built on, tiles of 2K-8K pixels were no faster with 1 thread and 1.5-3x slower with 2 (many
mid-sized parallel ops, each paying thread synchronisation; default OpenMP wait policy), while a
handful of large ops held up.
Buffers are kept between calls, so labelling many images allocates (and page-faults) them once.

Float32 throughout: on CPUs without bf16/fp16 matrix units, half-precision GEMMs are far slower.
Logits equal the reference path's up to float rounding, so votes can differ only where a member's
top two logits are within rounding of each other (tests/test_fused.py checks this in float64).
"""

from __future__ import annotations

import torch

from .model import PixelEnsemble, StackedBatchNorm, StackedLinear
from .predict import js_uncertainty, vote


def _fold_bn(bn: StackedBatchNorm, fc: StackedLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """fc(bn(x)) = x @ W' + b' for eval-mode bn: scale W's input rows, move the shift into the bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (M, 1, C)
    shift = bn.bias - bn.running_mean * scale
    return scale.transpose(1, 2) * fc.weight, fc.bias + torch.bmm(shift, fc.weight)


def upsample_into(z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling of (B, h, w, C) into the (B, H, W, C) tensor `out`.
    Seen as (B, C, h, w) both are channels-last, which has the vectorised CPU kernel; the .out form
    writes in place (F.interpolate would allocate and add a layout copy)."""
    torch.ops.aten.upsample_bilinear2d.out(z.permute(0, 3, 1, 2), list(out.shape[1:3]), False, None, None,
                                           out=out.permute(0, 3, 1, 2))
    return out


class FusedHead:
    """An eval-mode `PixelEnsemble` prepared for feature maps with the given channel counts.

    `channels[k]` is map k's channel count, in the order `upsample_concat` concatenates them.
    Call it with a batch's maps (each (B, C_k, h_k, w_k)) and the output size.
    """

    def __init__(self, ensemble: PixelEnsemble, channels: list[int]):
        cfg = ensemble.cfg
        if sum(channels) != cfg.in_dim:
            raise ValueError(f"maps have {sum(channels)} channels in all; the ensemble expects {cfg.in_dim}")
        self.members, (self.h1, _) = cfg.members, cfg.resolved_hidden()
        self._groups: dict = {}
        self._buffers: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            w1 = ensemble.fc1.weight.detach()  # (M, D, h1)
            ends = torch.tensor(channels).cumsum(0).tolist()
            # Map k's rows of every member's fc1 as one (C_k, M*h1) matrix: one GEMM serves all members.
            self.w1 = [w1[:, a:b].permute(1, 0, 2).reshape(b - a, -1) for a, b in zip([0] + ends, ends)]
            self.b1 = ensemble.fc1.bias.detach().reshape(-1).clone()  # (M*h1,), member-major like w1
            self.w2, self.b2 = _fold_bn(ensemble.bn1, ensemble.fc2)
            self.w3, self.b3 = _fold_bn(ensemble.bn2, ensemble.fc3)

    def _buffer(self, name: str, *shape: int) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = torch.empty(shape, device=self.b1.device)
        return buf

    def _grouped_weights(self, sizes: tuple) -> dict:
        """{(h, w): (ids of the maps of that resolution, their fc1 rows stacked: (C, M*h1))}."""
        if sizes not in self._groups:
            groups: dict = {}
            for k, s in enumerate(sizes):
                groups.setdefault(s, []).append(k)
            self._groups[sizes] = {s: (ks, torch.cat([self.w1[k] for k in ks])) for s, ks in groups.items()}
        return self._groups[sizes]

    def fc1_native(self, maps: list[torch.Tensor]) -> dict[tuple[int, int], torch.Tensor]:
        """(B, C_k, h_k, w_k) maps -> {(h, w): (B, h, w, M*h1)} fc1 pre-activations summed per
        resolution, the bias added once (upsampling preserves constants). The maps of one resolution
        are stacked so that they and all members are one GEMM."""
        out = {}
        B = maps[0].shape[0]
        for s, (ks, w) in self._grouped_weights(tuple(tuple(m.shape[-2:]) for m in maps)).items():
            flat = [maps[k].reshape(B, maps[k].shape[1], -1) for k in ks]
            stacked = torch.cat(flat, dim=1) if len(flat) > 1 else flat[0]  # (B, C, h*w)
            # (B*h*w, C) @ (C, M*h1): one plain GEMM (matmul would broadcast w over a batched GEMM);
            # for one image the rows are a transposed view, which BLAS reads without a copy.
            z = torch.mm(stacked.transpose(1, 2).reshape(-1, stacked.shape[1]).float(), w)
            if not out:
                z += self.b1
            out[s] = z.view(B, *s, -1)
        return out

    @torch.no_grad()
    def logits(self, maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """A batch's (B, C_k, h_k, w_k) maps -> (M, B*H*W, K) logits of every member."""
        if any(m.dim() != 4 for m in maps):
            raise ValueError("FusedHead takes maps of shape (B, C, h, w)")
        B, (H, W) = maps[0].shape[0], size
        M, h1 = self.members, self.h1
        u = self._buffer("u", B, H, W, M * h1)  # the upsampled sum: the only full-resolution activation
        for g, (s, z) in enumerate(self.fc1_native(maps).items()):
            if s == (H, W) and g == 0:
                u.copy_(z)
            elif s == (H, W):
                u.add_(z)
            elif g == 0:
                upsample_into(z, u)
            else:
                u.add_(upsample_into(z, self._buffer("tmp", B, H, W, M * h1)))
        members = u.view(-1, M, h1).relu_().transpose(0, 1)  # (M, P, h1): a strided batch, no copy
        # bmm, then the bias add: with several threads baddbmm splits the batch over threads and runs
        # nested GEMMs, measured several times slower here.
        x = torch.bmm(members, self.w2, out=self._buffer("x", M, B * H * W, self.w2.shape[-1]))
        x.add_(self.b2).relu_()
        return torch.bmm(x, self.w3).add_(self.b3)

    def __call__(self, maps: list[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's (B, C_k, h_k, w_k) maps -> (B, H, W) voted labels and (B, H, W) JS uncertainty.
        Memory grows with B*H*W (~5 KB a pixel at M*h1 = 1280): batch small images, not large ones."""
        shape = (maps[0].shape[0], *size)
        logits = self.logits(maps, size)
        return vote(logits).view(shape), js_uncertainty(logits).view(shape)
