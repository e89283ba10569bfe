"""``elastic-nas cluster local``: an autoscaling Ray cluster on this machine, on 127.0.0.1.

Ray's fake multi-node provider stands in for a cloud: its "instances" are Ray nodes started
as processes here, each after a boot time (``cluster/local_provider.py``), launched when
work waits for resources and released after the idle timeout, by the same autoscaler that
runs on a real cluster. The worker node type carries
the ``slot`` resource that the training workers ask for (``elastic.resources_per_worker``),
as the GPU node types of ``cluster.yaml`` carry GPUs. The Ray wheel does not ship the
provider's example config, so the config is written here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from elastic_nas.errors import UserError

HEAD_TYPE = "ray.head.default"  # the fake provider's fixed name for the head node type
WORKER_TYPE = "cpu_slot"
# Ray gives each node's worker processes ports 10002-19999 unless told otherwise, so the
# head's ports must lie outside that range.
WORKER_PORTS = range(10002, 20000)


def autoscaling_config(port: int, max_workers: int = 3, worker_cpus: int = 1, head_cpus: int = 0,
                       idle_timeout_s: float = 20.0, boot_s: float = 5.0) -> dict:
    """The autoscaler config: a head and one worker node type (``CPU``, one ``slot`` per CPU),
    0..``max_workers`` of it. A head without CPUs runs drivers and the Train controller only,
    as ``cluster.yaml``'s head does, so every worker and evaluator needs a launched node."""
    return {
        "cluster_name": "elastic-nas-local",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {
            "type": "external",
            "module": "elastic_nas.cluster.local_provider.BootingFakeProvider",
            "boot_s": boot_s,
            "gcs_address": f"127.0.0.1:{port}",
            "use_node_id_as_ip": True,  # the provider's nodes all live on 127.0.0.1
            "disable_node_updaters": True,  # nothing to ssh into
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {
                # A small object store per node: several nodes share this machine's memory.
                "resources": {"CPU": worker_cpus, "slot": worker_cpus, "object_store_memory": 200 * 2**20},
                "node_config": {}, "min_workers": 0, "max_workers": max_workers,
            },
        },
        "head_node_type": HEAD_TYPE,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def head_env(heartbeat_timeout_s: int = 10) -> dict[str, str]:
    """The environment of ``ray start``: the fake provider, a 1 s autoscaler tick (5 s by
    default), loopback addresses, and a node that stops reporting (a hung raylet; a dead
    one the provider reports at once) replaced after ``heartbeat_timeout_s`` (30 s by default)."""
    env = dict(os.environ)
    env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
               AUTOSCALER_HEARTBEAT_TIMEOUT_S=str(heartbeat_timeout_s), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return env


def check_ports(*ports: int) -> None:
    if any(p in WORKER_PORTS for p in ports):
        raise UserError(f"ports {WORKER_PORTS.start}-{WORKER_PORTS.stop - 1} are Ray's worker ports; "
                        f"choose --port and --dashboard-port outside them")


def head_command(config_path: Path, port: int, dashboard_port: int, temp_dir: Path | None = None) -> list[str]:
    """``ray start --head --block`` for the config: in the foreground, so stopping this one
    process group stops the head and every node the autoscaler launched."""
    ray = str(Path(sys.executable).parent / "ray")
    cmd = [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
           "--num-cpus", "0", f"--autoscaling-config={config_path}", "--disable-usage-stats"]
    if temp_dir is not None:
        cmd += ["--temp-dir", str(temp_dir)]
    return cmd


def write_config(directory: Path, **kwargs) -> Path:
    path = directory / "autoscaling.yaml"
    path.write_text(yaml.safe_dump(autoscaling_config(**kwargs), sort_keys=False))
    return path


def local_command(args: argparse.Namespace) -> int:
    """Run the local autoscaling cluster in the foreground until Ctrl-C or SIGTERM."""
    if args.max_workers < 1 or args.worker_cpus < 1 or args.idle_timeout_s <= 0 or args.boot_s < 0:
        raise UserError("--max-workers and --worker-cpus must be >= 1, --idle-timeout-s > 0 and --boot-s >= 0")
    check_ports(args.port, args.dashboard_port)
    directory = Path(tempfile.mkdtemp(prefix="elastic-nas-local-"))
    config = write_config(directory, port=args.port, max_workers=args.max_workers,
                          worker_cpus=args.worker_cpus, idle_timeout_s=args.idle_timeout_s, boot_s=args.boot_s)
    cmd = head_command(config, args.port, args.dashboard_port, Path(args.temp_dir) if args.temp_dir else None)
    print(f"elastic-nas: local autoscaling cluster: head 127.0.0.1:{args.port} (no CPUs), "
          f"0..{args.max_workers} '{WORKER_TYPE}' nodes of {args.worker_cpus} CPU + slot, "
          f"each booting {args.boot_s:g}s, released after {args.idle_timeout_s:g}s idle; config {config}", flush=True)
    print(f"elastic-nas: submit with  ray job submit --address http://127.0.0.1:{args.dashboard_port} "
          f"--working-dir . -- python -m elastic_nas ...;  watch with  ray status --address 127.0.0.1:{args.port}",
          flush=True)
    proc = subprocess.Popen(cmd, env=head_env(), start_new_session=True,
                            stdout=None if args.verbose else subprocess.DEVNULL,
                            stderr=None if args.verbose else subprocess.DEVNULL)

    def stop(*_):
        # The launched nodes are children of the head's autoscaler, in ray start's process
        # group; SIGKILL ends what outlives ray start's own shutdown (its GCS, some nodes).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        stop()
    if rc:
        raise UserError(f"ray start exited with {rc} (port {args.port} taken? run with --verbose)")
    return 0


__all__ = ["autoscaling_config", "head_command", "head_env", "local_command", "write_config"]
