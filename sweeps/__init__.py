"""Sweeps: Ray Tune over the alignment hyper-parameters, every trial tracked in MLflow."""
