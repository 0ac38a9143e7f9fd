"""Shared pieces of the server benchmarks: ports, RSS, an untrained bundle, a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def random_bundle(folder: Path, architecture: str, classes: list[str], input_size: int = 0):
    """An untrained bundle (safetensors + model.json) for load tests that need no accuracy."""
    import torch

    from marinelife.config import TrainConfig
    from marinelife.data.preprocess import preprocess_config_for_model
    from marinelife.fileio import save_weights
    from marinelife.models import build_classifier
    from marinelife.models.bundle import ModelInfo, head_settings, write_model_json

    torch.manual_seed(0)
    config = TrainConfig(architecture=architecture, pretrained=False)
    model = build_classifier(config, len(classes)).eval()
    save_weights(model.state_dict(), folder / "best.safetensors")
    pre = preprocess_config_for_model(model.backbone, input_size=input_size)
    write_model_json(ModelInfo(architecture, classes, pre, head_settings(config)), folder)
    return folder


def stop_server(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Ctrl-C, as a user would; kill only if it does not exit in time."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
