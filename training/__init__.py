"""Training, evaluation, active-learning retraining and building the bundled default checkpoint."""
