"""A plain PyTorch PARROT, trained fold after fold: the reference bench/train_folds.py times against.

Same architecture and training as parrot_jax (two CNN branches -> R_p, R_q [B, latent]; Hadamard
R_p * R_q; OT: C = cdist(R_p, R_q) / max, Gamma = log-domain Sinkhorn(C), uniform marginals, epsilon,
threshold checked every 10 iterations, autograd through the iterations; head Dense(hidden) ReLU,
dropout, Dense(C)); Adam, batch 32, shuffled epochs, a validation pass after each epoch. Features are
standardised with the training rows' statistics as the JAX trainer does. Benchmark use only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class Branch(nn.Module):
    def __init__(self, dim: int, cfg) -> None:
        super().__init__()
        pad = "same" if cfg.conv_padding.lower() == "same" else 0
        layers, channels, length = [], 1, dim
        for f in cfg.filters:
            layers += [nn.Conv1d(channels, f, cfg.kernel_size, padding=pad), nn.ReLU(), nn.MaxPool1d(cfg.pool_size)]
            length = (length if pad == "same" else length - cfg.kernel_size + 1) // cfg.pool_size
            channels = f
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(length * channels, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x[:, None, :]).flatten(1))


def sinkhorn_log(cost: torch.Tensor, epsilon: float, threshold: float, max_iterations: int) -> torch.Tensor:
    """Entropic OT plan with uniform marginals, log-domain updates of the potentials f, g."""
    n = cost.shape[0]
    log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device)
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    for it in range(max_iterations):
        f = epsilon * log_a - epsilon * torch.logsumexp((g[None, :] - cost) / epsilon, dim=1)
        g = epsilon * log_a - epsilon * torch.logsumexp((f[:, None] - cost) / epsilon, dim=0)
        if (it + 1) % 10 == 0:
            plan = torch.exp((f[:, None] + g[None, :] - cost) / epsilon)
            if (plan.sum(1) - 1.0 / n).abs().sum() < threshold:
                break
    return torch.exp((f[:, None] + g[None, :] - cost) / epsilon)


class Parrot(nn.Module):
    def __init__(self, dims, cfg) -> None:
        super().__init__()
        self.p, self.q = Branch(dims[0], cfg), Branch(dims[1], cfg)
        self.hidden = nn.Linear(5 * cfg.latent_dim, cfg.hidden)
        self.drop = nn.Dropout(_dropout(cfg))
        self.out = nn.Linear(cfg.hidden, cfg.num_classes)
        sk = cfg.sinkhorn
        self.sk = (sk.epsilon, sk.threshold if sk.threshold is not None else -1.0, sk.max_iterations)

    def forward(self, xp: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
        rp, rq = self.p(xp), self.q(xq)
        dist = torch.cdist(rp, rq)
        cost = dist / dist.max().clamp_min(1e-12)
        gamma = sinkhorn_log(cost, *self.sk)
        fused = torch.cat([rp * rq, gamma @ rp, rq, gamma.T @ rq, rp], dim=1)
        return self.out(self.drop(torch.relu(self.hidden(fused))))


def _dropout(cfg) -> float:
    return float(cfg.dropout_rate) if "head" in cfg.dropout_places else 0.0


def train_folds(features, labels, folds, cfg, epochs: int, batch_size: int = 32, lr: float = 1e-3,
                device: str = "cpu") -> None:
    """Train the folds one after another on ``device`` ("cpu" or "cuda"); ends synchronised."""
    torch.manual_seed(0)
    y = torch.as_tensor(labels, dtype=torch.long, device=device)
    for fold in folds:
        xs = []
        for x in features:
            mean, sd = x[fold.train].mean(0), x[fold.train].std(0)
            xs.append(torch.as_tensor((x - mean) / np.where(sd > 0, sd, 1.0), dtype=torch.float32, device=device))
        model = Parrot([x.shape[1] for x in features], cfg).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        rng = np.random.default_rng(0)
        for _ in range(epochs):
            model.train()
            order = torch.as_tensor(rng.permutation(fold.train), device=device)
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                loss = nn.functional.cross_entropy(model(xs[0][rows], xs[1][rows]), y[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val = torch.as_tensor(fold.val, device=device)
                for start in range(0, len(val), batch_size):
                    rows = val[start : start + batch_size]
                    nn.functional.cross_entropy(model(xs[0][rows], xs[1][rows]), y[rows])
    if device != "cpu":
        torch.cuda.synchronize()
