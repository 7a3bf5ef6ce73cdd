"""A free TCP port on loopback, for a local rendezvous (torch.distributed, DeepSpeed's launcher) or a test server.
The port is free when asked; whoever binds it next should do so soon."""
from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
