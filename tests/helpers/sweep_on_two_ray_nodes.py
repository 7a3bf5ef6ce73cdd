"""Run sweeps/tune.py on a two-node Ray cluster started here on this machine (two raylets on 127.0.0.1, one CPU
each, via ray.cluster_utils.Cluster), then stop exactly that cluster (never `ray stop`, which would end every Ray
on the machine). Usage: tune.py's flags, without --address."""
import sys

from ray.cluster_utils import Cluster

from sweeps.driver import main as sweep_main


def main(argv: list[str]) -> int:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        return sweep_main(["--address", cluster.address, *argv])
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
