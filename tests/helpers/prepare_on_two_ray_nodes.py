"""Run `pretrain.prepare --backend ray` on a two-node Ray cluster started here on this machine (two raylets on
127.0.0.1, one CPU each, via ray.cluster_utils.Cluster), then stop exactly that cluster. Usage: the prepare flags,
without --backend/--ray-address. Prints the run's stats.json as the last line."""
import json
import sys
from pathlib import Path

from ray.cluster_utils import Cluster

from pretrain.prepare import parse, prepare


def main(argv: list[str]) -> int:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cfg = parse([*argv, "--backend", "ray", "--workers", "2", "--ray-address", cluster.address])
        prepare(cfg)
    finally:
        cluster.shutdown()
    print(json.dumps(json.loads((Path(cfg.out) / "stats.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
