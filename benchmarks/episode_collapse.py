"""Does a model's embedding survive label-episode meta-training with a prototype head?

One client's data (mnist-5k, labels 1, 4, 7, 9, 60 samples each, seed 0), G-FML /
CL-FML's own ``meta_update`` (FOMAML, label episodes) run ``--steps`` times. Every
sixth of the way it reports the episode loss (ln k is a uniform output over k
labels), the mean embedding norm, the share of dead embedding units, and the
nearest-prototype accuracy on the client's samples (prototypes from every other
sample, scored on the rest).

    .venv/bin/python benchmarks/episode_collapse.py --model cnn --head prototype --lr 0.1
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

from dfml.algorithms.gfml import GFMLConfig, meta_update
from dfml.algorithms.meta.prototypes import prototype_head
from dfml.data.config import DataConfig
from dfml.data.registry import load_dataset
from dfml.models.head import head_layout
from dfml.models.zoo import ModelConfig, build_model

LABELS = [1, 4, 7, 9]
log = logging.getLogger("episode_collapse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", help="model name (default cnn)")
    parser.add_argument("--head", default="prototype", help="episode head (default prototype)")
    parser.add_argument("--lr", type=float, default=0.1, help="outer step size (default 0.1)")
    parser.add_argument("--steps", type=int, default=240, help="meta-updates (default 240)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    ds = load_dataset(DataConfig(dataset="mnist-5k"))
    model = build_model(ModelConfig(model=args.model), ds.input_shape, ds.num_classes)
    layout = head_layout(model)
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(ds.y == c), 60, replace=False) for c in LABELS])
    x, y = torch.from_numpy(ds.features(idx)), torch.from_numpy(ds.y[idx])
    target = torch.tensor([LABELS.index(int(v)) for v in y])
    cfg = GFMLConfig(episodes="labels", episode_head=args.head, lr=args.lr)
    theta = model.init_flat(0).clone()
    every = max(1, args.steps // 6)
    loss: float | None = None  # the last meta-update's episode loss
    for step in range(args.steps + 1):
        if step % every == 0:
            with torch.no_grad():
                emb = layout.embed(theta, x)
                proto = prototype_head(layout, theta, x[::2], y[::2], LABELS)
                right = model(proto, x[1::2])[:, LABELS].argmax(1) == target[1::2]
            log.info(
                "%s %s lr %g step %d: loss %s, embedding norm %.2f, dead units %.0f %%, "
                "nearest-prototype accuracy %.3f",
                args.model,
                args.head,
                args.lr,
                step,
                "-" if loss is None else f"{loss:.3f}",
                emb.norm(dim=1).mean(),
                100 * (emb.abs().sum(0) == 0).float().mean(),
                right.float().mean(),
            )
        if step < args.steps:
            theta, loss = meta_update(cfg, model, theta, x, y, rng)


if __name__ == "__main__":
    main()
