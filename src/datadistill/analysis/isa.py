"""Diagnostics of crucial-sample selection (the ISA paper, section 2.2 and appendix, Figure 1
right): do the hard real samples carry the information of the easy ones?

Rank a real batch by each sample's KRR loss (Eq. 4: predicted from the synthetic set with a
network's features), then:

* ``hard_to_easy``: the hardest ``1 - frac`` of the batch (the support set, with their centred
  one-hot targets) predicts the easiest ``frac`` by kernel ridge regression; the MSE loss of that
  prediction (0.0661 in the paper on CIFAR-10 IPC 10: the hard samples contain the easy ones);
* ``easy_to_hard``: the easiest ``1 - frac`` predicts the hardest ``frac`` (0.1430 in the paper:
  the easy ones do not contain the hard ones).

Losses are FRePo's ``0.5 * squared error summed over classes``, averaged over the predicted
samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.evaluate.frepo_train import regression_targets
from datadistill.evaluate.krr import REG, features, krr_predict
from datadistill.evaluate.train import build_network
from datadistill.synthetic import SyntheticSet
from datadistill.utils import make_generator, resolve_device


@dataclass
class HardEasy:
    """Result of :func:`hard_easy_losses`: the two cross-prediction losses, the per-sample loss
    threshold between the easy and hard parts, and the sizes."""

    hard_to_easy: float
    easy_to_hard: float
    threshold: float
    frac: float
    batch: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _mse(pred: Tensor, y: Tensor) -> float:
    return float(0.5 * (pred - y).pow(2).sum(1).mean())


def hard_easy_losses(feat_real: Tensor, y_real: Tensor, feat_syn: Tensor, y_syn: Tensor,
                     frac: float = 0.2, reg: float = REG) -> HardEasy:
    """The hard-predicts-easy diagnostic from features.

    Args:
        feat_real: (n, D) features of the real batch; y_real: (n, K) its regression targets.
        feat_syn: (m, D) features of the synthetic set; y_syn: (m, K) its (learned) labels.
        frac: the easy (and, for the reverse, the hard) fraction, in (0, 1).
    """
    n = feat_real.shape[0]
    n_small = int(math.floor(frac * n))
    if not 0.0 < frac < 1.0 or n_small < 1 or n - n_small < 1:
        raise ConfigError(f"frac must lie in (0, 1) and leave both parts non-empty; got {frac} "
                          f"for a batch of {n}")
    feat_real, feat_syn = feat_real.double(), feat_syn.double()
    y_real, y_syn = y_real.double(), y_syn.double()
    per_sample = 0.5 * (krr_predict(feat_real, feat_syn, y_syn, reg) - y_real).pow(2).sum(1)
    order = per_sample.argsort()  # easiest first
    easy, rest = order[:n_small], order[n_small:]  # easiest frac / hardest 1 - frac
    hard, rest_easy = order[n - n_small:], order[: n - n_small]  # hardest frac / easiest 1 - frac
    h2e = _mse(krr_predict(feat_real[easy], feat_real[rest], y_real[rest], reg), y_real[easy])
    e2h = _mse(krr_predict(feat_real[hard], feat_real[rest_easy], y_real[rest_easy], reg),
               y_real[hard])
    return HardEasy(h2e, e2h, float(per_sample[order[n_small - 1]]), frac, n)


def hard_predicts_easy(
    synset: SyntheticSet,
    real: RealDataset,
    *,
    net: nn.Module | str = "frepo-convnet-bn",
    batch: int = 1024,
    frac: float = 0.2,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> HardEasy:
    """The diagnostic for ``synset`` on a random batch of ``batch`` images of ``real``.

    ``net``: the feature network (eval mode), or the name of a registered network initialised
    from ``seed`` (FRePo's pool networks are young, at most 100 online steps, so a fresh one is
    the typical case). Hard labels of ``synset`` become centred one-hot targets.
    """
    dev = resolve_device(device)
    if isinstance(net, str):
        net = build_network(net, real.channels, real.num_classes, real.im_size, seed, dev)
    gen = make_generator(seed)
    idx = torch.randperm(len(real), generator=gen)[: min(batch, len(real))]
    x_s, y_s = synset.decode()
    f_r = features(net, real.images[idx])
    f_s = features(net, x_s)
    dev = f_r.device
    return hard_easy_losses(f_r, regression_targets(real.labels[idx].to(dev), real.num_classes),
                            f_s, regression_targets(y_s.to(dev), synset.num_classes), frac)


def hard_easy_summary(
    synset: SyntheticSet,
    real: RealDataset,
    *,
    draws: int = 5,
    net: str = "frepo-convnet-bn",
    batch: int = 1024,
    frac: float = 0.2,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, object]:
    """:func:`hard_predicts_easy` over ``draws`` independent draws (seed ``seed + i`` fixes both
    the real batch and the fresh network), as a JSON-ready dict: ``hard_to_easy`` and
    ``easy_to_hard`` (means), their ``*_std`` (population std over draws, 0 for one draw),
    ``net``, ``batch``, ``frac`` and ``draws`` (each :class:`HardEasy` as a dict).

    Raises:
        ConfigError: ``draws`` < 1, or ``frac`` / ``batch`` leaving a part empty.
    """
    if draws < 1:
        raise ConfigError(f"draws must be >= 1, got {draws}")
    runs = [hard_predicts_easy(synset, real, net=net, batch=batch, frac=frac, seed=seed + i,
                               device=device) for i in range(draws)]
    h2e = torch.tensor([r.hard_to_easy for r in runs], dtype=torch.float64)
    e2h = torch.tensor([r.easy_to_hard for r in runs], dtype=torch.float64)
    return {"hard_to_easy": float(h2e.mean()), "hard_to_easy_std": float(h2e.std(unbiased=False)),
            "easy_to_hard": float(e2h.mean()), "easy_to_hard_std": float(e2h.std(unbiased=False)),
            "net": net, "batch": runs[0].batch, "frac": frac, "draws": [r.to_dict() for r in runs]}
