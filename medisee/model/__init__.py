"""The MediSee network (``MediSeeModel``) and its bundle with tokenizer and preprocessing."""

from .bundle import MediSee, TokenBatch, TrainingSample
from .medisee import GroupOutputs, Groups, ImageEncoding, MediSeeModel

__all__ = ["GroupOutputs", "Groups", "ImageEncoding", "MediSee", "MediSeeModel", "TokenBatch", "TrainingSample"]
