"""Measuring a predictor: test-split metrics (``evaluate``), MIMOSeg perspectives
(``evaluate_mimo``), people's questions (``evaluate_human``), the score threshold and box
source chosen on validation data (``calibrate``) and the worst-cases image (``report``).
Used by the command line, training (the build, retraining) and the model card."""
