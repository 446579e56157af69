"""MediSee: reasoning-based segmentation and detection in medical images.

The library has no server or UI imports; ``medisee.predictor.Predictor`` is the entry point
for inference and ``medisee.weights`` loads checkpoints.
"""

__version__ = "0.1.0"
