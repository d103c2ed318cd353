"""Time our `_re` networks and benchmarks/reference_sa.py against [Re]'s own modules, in one process.

[Re] (Varma T and Prabhu, the reproduction this project compares with) publishes its networks in
github.com/NishantPrabhu/Self-Attention-and-Convolutions, `main/models/`. This project holds none of its code:
fetch that repository anywhere outside this one and name its folder:

    git clone https://github.com/NishantPrabhu/Self-Attention-and-Convolutions /tmp/re
    .venv/bin/python benchmarks/peer.py --re-code /tmp/re [--batch 8] [--reps 5] [--runs 3]

For each of [Re]'s three 9-head networks at its published size (6 layers of width 400, feed-forward 512, ReLU,
post-norm, attention dropout 0.1, 2x2 invertible downsampling of 32x32 images):

- quadratic (`gaussian_isotropic.yaml`), learned 2-D (`learned2d_nocontent_9heads.yaml`) and learned 2-D + content
  (`learned2d_withcontent_9heads.yaml`);

one training step (forward, cross-entropy, backward, SGD with momentum) on a fixed batch is timed for [Re]'s
network, ours (`sa_quadratic_re`, `sa_learned_re`, `sa_learned_content_re`) and the reference, in fp32 and bf16
autocast, every function in turn within each round after a warm-up round (timing.alternating). Each of `--runs`
separate runs builds the networks anew; the table gives each run's medians and the median over runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_sa import REFERENCES  # noqa: E402

from attnlib import results  # noqa: E402
from attnlib.models import create_model  # noqa: E402
from attnlib.report import timing  # noqa: E402

PRECISIONS = ("fp32", "bf16")
ENCODER = dict(ff_activation="relu", num_encoder_blocks=6, num_heads=9, model_dim=400, ff_dim=512, pre_norm=False,
               attention_dropout_prob=0.1, hierarchical_weight_sharing=False, max_position_embeddings=16,
               position_embedding_size=-1)
# our network -> [Re]'s encoder settings for it (its configs/*.yaml)
PEERS = {
    "sa_quadratic_re": dict(attention="gaussian", attention_isotropic_gaussian=True, gaussian_mu_init_noise=2.0,
                            gaussian_sigma_init_noise=0.01, attention_gaussian_blur_trick=False),
    "sa_learned_re": dict(attention="learned_2d", use_attention_data=False, query_positional_score=False),
    "sa_learned_content_re": dict(attention="learned_2d", use_attention_data=True, query_positional_score=True),
}


def load_peer(folder: Path):
    """[Re]'s `main/models` package from its checkout at `folder`, imported under the name re_models."""
    package = folder / "main" / "models"
    if not (package / "networks.py").is_file():
        raise SystemExit(f"error: {package}/networks.py not found; --re-code names the folder of a checkout of "
                         "NishantPrabhu/Self-Attention-and-Convolutions")
    spec = importlib.util.spec_from_file_location("re_models", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["re_models"] = module
    spec.loader.exec_module(module)
    return module


class PeerNetwork(nn.Module):
    """[Re]'s classifier as its training script assembles it: feature pooling, encoder, classification head."""

    def __init__(self, re_models, encoder: dict):
        super().__init__()
        pooling = dict(pool_with_resnet=False, pool_downsample_size=2, model_dim=400)
        self.pool = re_models.FeaturePooling(pooling)
        self.encoder = re_models.Encoder(encoder)
        self.head = re_models.ClassificationHead(dict(model_dim=400, num_classes=10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.pool(images)))  # log-probabilities: cross-entropy of them is the same


def time_once(name: str, re_models, batch: int, reps: int, device: torch.device) -> dict:
    """Seconds per training step of each (implementation, precision) of network `name`, medians of `reps` rounds."""
    torch.manual_seed(0)
    models = {"ours": create_model(name), "[Re]": PeerNetwork(re_models, {**ENCODER, **PEERS[name]})}
    if name in REFERENCES:
        models["reference"] = REFERENCES[name]()
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    fns = {(impl, p): timing.train_step_fn(model.to(device), x, y, p) for p in PRECISIONS
           for impl, model in models.items()}
    times = timing.alternating(fns, device, warmup=1, reps=reps)
    return {key: statistics.median(t) for key, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--re-code", required=True, type=Path, help="a checkout of [Re]'s repository, outside this one")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--networks", nargs="+", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    re_models = load_peer(args.re_code)
    print(f"machine: {results.device_name(device)}; torch {torch.__version__}; batch {args.batch}, training step, "
          f"{args.runs} runs of 1 warm-up + {args.reps} alternating rounds", flush=True)
    print(f"{'network':<22} {'prec':<5} {'run':>4} {'ours img/s':>10} {'[Re] img/s':>10} {'ref img/s':>9} "
          f"{'ours/[Re]':>9} {'ref/[Re]':>8}")
    for name in args.networks:
        runs = [time_once(name, re_models, args.batch, args.reps, device) for _ in range(args.runs)]
        for p in PRECISIONS:
            rates = {impl: [args.batch / r[(impl, p)] for r in runs] for impl, _ in runs[0] if _ == p}
            for i in range(args.runs + 1):
                pick = (lambda v: statistics.median(v)) if i == args.runs else (lambda v, i=i: v[i])
                ours, peer = pick(rates["ours"]), pick(rates["[Re]"])
                ref = pick(rates["reference"]) if "reference" in rates else float("nan")
                print(f"{name:<22} {p:<5} {'med' if i == args.runs else i + 1:>4} {ours:>10.2f} {peer:>10.2f} "
                      f"{ref:>9.2f} {ours / peer:>8.2f}x {ref / peer:>7.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
