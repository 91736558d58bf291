"""ray_cluster.yaml is a config Ray's cluster launcher accepts, and it keeps the dashboard local."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_yaml_passes_ray_launcher_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on a schema violation
    assert config["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"].startswith("g"), \
        "workers must be GPU instances"
    head_cmds = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds, "dashboard must not listen on every interface"
    assert any("pip install" in c and "tl" in c for c in config["setup_commands"]), "setup must install this project"
