"""What a run records besides its weights, every epoch and at initialisation (epoch 0): the quadratic heads'
centers and spreads, and how every head attends on a fixed set of test images; and each record written to its
CSV (attnlib.results.RECORDS), the run's earlier rows replaced. The checkpoint also keeps, every epoch, the attention
of every layer on the first of those images (`attention_snapshot`), for figures of how the heads develop."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from attnlib import results
from attnlib.data import Dataset, normalize
from attnlib.evidence.attention_maps import attention_maps, conv_likeness


@dataclass
class RunInfo:
    """What a metric row says about the run besides its numbers."""
    run_id: str
    experiment: str
    model: str
    variant: str
    dataset: str
    profile: str


def center_rows(model: nn.Module, meta: dict, epoch: int) -> list[dict]:
    """One row per (layer, head) of a quadratic model: its center and inverse covariance; [] otherwise."""
    if getattr(getattr(model, "cfg", None), "positional", None) not in ("quadratic", "quadratic_aniso"):
        return []
    with torch.no_grad():
        centers = model.attention_centers().cpu()  # (layers, heads, 2)
        inv = torch.stack([b.attn.positional.inverse_covariance() for b in model.layer_blocks()]).cpu()
    return [dict(meta, epoch=epoch, layer=layer + 1, head=head + 1, row=centers[layer, head, 0].item(),
                 col=centers[layer, head, 1].item(), inv_cov_rr=inv[layer, head, 0, 0].item(),
                 inv_cov_rc=inv[layer, head, 0, 1].item(), inv_cov_cc=inv[layer, head, 1, 1].item())
            for layer in range(centers.shape[0]) for head in range(centers.shape[1])]


PROBE_IMAGES = 64  # test images on which attention_rows measures every epoch


def probe_images(data: Dataset, device: torch.device, n: int = PROBE_IMAGES) -> torch.Tensor:
    """The first `n` test images, normalised, on `device`: the same images for every epoch and run."""
    return normalize(data.x_test[:n].to(device), data.mean, data.std)


def attention_rows(model: nn.Module, images: torch.Tensor, meta: dict, epoch: int) -> list[dict]:
    """One row per (layer, head) of a self-attention network (results.ATTENTION_COLUMNS): where and how sharply
    each head attends on `images` (attention_maps.conv_likeness); [] for a model without attention_probs."""
    if not hasattr(model, "attention_probs"):
        return []
    likeness = conv_likeness(attention_maps(model, images))
    keep = [c for c in results.ATTENTION_COLUMNS if c in likeness.columns]
    return [dict(meta, epoch=epoch, **row) for row in likeness[keep].to_dict("records")]


SNAPSHOT_BYTES = 2 * 2**20  # at most this much per epoch (float16): a 7x7 grid of 9 heads in 3 layers takes 130 kB


def attention_snapshot(model: nn.Module, images: torch.Tensor, epoch: int) -> list[dict]:
    """[{"epoch", "layers": one (heads, T, T) float16 tensor per layer}]: the attention of every layer on the first of
    `images`; [] for a model without attention_probs or one whose maps take more than SNAPSHOT_BYTES."""
    if not hasattr(model, "attention_probs"):
        return []
    probs = model.attention_probs(images[:1])
    if sum(p.numel() for p in probs) * 2 > SNAPSHOT_BYTES:
        return []
    return [{"epoch": epoch, "layers": [p[0].to(torch.float16).cpu() for p in probs]}]


def write_records(results_dir, run: RunInfo, **records: list[dict]):
    """Each record of the run (results.RECORDS: its metric rows, centers, attention) into its CSV, replacing the
    run's earlier rows; a record a model does not keep (no centers, say) writes nothing."""
    for key, rows in records.items():
        if rows or key == "history":
            results.write_run_rows(results.record_path(results_dir, run.profile, run.experiment, key), run.run_id,
                                   rows, results.RECORDS[key][1])


class RunRecords:
    """A run's records as it trains: its metric rows, and on the lead process (the one that writes) its heads'
    centers and attention, from initialisation (epoch 0) on."""

    def __init__(self, model: nn.Module, run: RunInfo, seed: int, data: Dataset, device: torch.device, lead: bool):
        self.meta, self.lead = dict(asdict(run), seed=seed), lead
        self.probe = probe_images(data, device)
        self.history: list[dict] = []
        self.centers = center_rows(model, self.meta, 0) if lead else []
        self.attention = attention_rows(model, self.probe, self.meta, 0) if lead else []
        self.snapshots = attention_snapshot(model, self.probe, 0) if lead else []

    def restore(self, state: dict) -> int:
        """The records a checkpoint holds, in place of these; returns the epoch it was written after."""
        self.history, self.centers, self.attention = (state["history"], state.get("centers", []),
                                                      state.get("attention", []))
        self.snapshots = state.get("snapshots", [])
        return state["epoch"]

    def add(self, model: nn.Module, row: dict) -> None:
        """An epoch's metric row, and (lead process) the model's centers and attention after it."""
        self.history.append(row)
        if self.lead:
            self.centers += center_rows(model, self.meta, row["epoch"])
            self.attention += attention_rows(model, self.probe, self.meta, row["epoch"])
            self.snapshots += attention_snapshot(model, self.probe, row["epoch"])

    def as_dict(self) -> dict[str, list[dict]]:
        """What the checkpoint keeps: the CSVs' rows and the attention snapshots."""
        return {"history": self.history, "centers": self.centers, "attention": self.attention,
                "snapshots": self.snapshots}

    def write(self, results_dir, run: RunInfo) -> None:
        write_records(results_dir, run, history=self.history, centers=self.centers, attention=self.attention)
