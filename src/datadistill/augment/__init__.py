"""Augmentation: DSA (differentiable siamese augmentation), CutMix and MixUp."""

from datadistill.augment.compose import ComposedDSA
from datadistill.augment.dsa import DSA, DSAParams, default_strategy
from datadistill.augment.mix import cutmix, mixup

__all__ = ["ComposedDSA", "DSA", "DSAParams", "default_strategy", "cutmix", "mixup"]
