"""Sweep the fine-tuning hyper-parameters with Ray Tune (ASHA on dev F1), every trial tracked in MLflow.

    python sweeps/tune.py --task mner --data DIR --init EXPORT [--samples 6] [--epochs 2] [overrides]
    ray submit cluster/sweep.yaml sweeps/tune.py -- --task mner --data /abs/DIR --init /abs/EXPORT \\
        --address auto --storage /shared/sweeps --tracking-uri http://HEAD:5000
"""
from common.errors import cli_main
from sweeps.driver import main

if __name__ == "__main__":
    cli_main(main)
