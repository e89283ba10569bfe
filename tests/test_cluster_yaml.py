"""cluster.yaml passes Ray's own autoscaler schema check and keeps the project's promises."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_valid_for_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    # What `ray up` does before launching anything: merge AWS defaults, then the schema check.
    validate_config(prepare_config(cfg))  # raises on a schema violation


def test_cluster_yaml_spot_gpu_pools_and_private_dashboard():
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "InstanceMarketOptions" not in head["node_config"]
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert len({w["node_config"]["InstanceType"] for w in workers.values()}) >= 2
    for w in workers.values():
        assert w["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
        assert w["min_workers"] == 0 and w["max_workers"] >= 1
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "--num-cpus=0" in start
    assert any("pip install" in c and "elastic-nas" in c for c in cfg["setup_commands"])


def test_schema_check_catches_a_broken_config():
    import jsonschema
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    cfg["available_node_types"]["gpu_spot_l4"]["min_wrokers"] = 0  # typo
    with pytest.raises(jsonschema.ValidationError, match=r"'min_wrokers' was unexpected"):
        validate_config(prepare_config(cfg))


def test_worker_nodes_preload_the_training_imports():
    """Warm workers only skip the imports if worker nodes start with the preload list."""
    from elastic_nas.cluster.warm_workers import preload_env

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    (key, value), = preload_env().items()
    assert f"{key}={value} ray start" in " ".join(cfg["worker_start_ray_commands"])
    assert key not in " ".join(cfg["head_start_ray_commands"])  # head actors need no torch


def test_local_autoscaling_config_passes_the_schema_and_bad_options_exit_2():
    """`elastic-nas cluster local`'s config is what Ray's autoscaler accepts; a bad option or
    a port inside Ray's worker-port range is one line and exit 2, before Ray starts."""
    import subprocess
    import sys

    from ray.autoscaler._private.util import validate_config

    from elastic_nas.cluster.local import WORKER_TYPE, autoscaling_config

    cfg = autoscaling_config(port=6390, max_workers=3, idle_timeout_s=15, boot_s=2)
    validate_config(cfg)
    worker = cfg["available_node_types"][WORKER_TYPE]
    assert worker["resources"]["slot"] == worker["resources"]["CPU"] == 1
    assert worker["min_workers"] == 0 and worker["max_workers"] == 3
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert cfg["idle_timeout_minutes"] == 0.25 and cfg["provider"]["gcs_address"] == "127.0.0.1:6390"
    for bad in (["--max-workers", "0"], ["--port", "12000"]):
        out = subprocess.run([sys.executable, "-m", "elastic_nas", "cluster", "local", *bad],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
