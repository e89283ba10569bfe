"""`ray job submit` against a real local cluster (`ray start --head` on 127.0.0.1).

The pipeline runs as a Ray job to SUCCEEDED with its outputs in place; then a supernet job
is stopped mid-training with `ray job stop`, submitted again, and resumes from its checkpoint.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.ray_utils import start_head, submit, wait_status

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1500)]

TINY_DATA = ["data.num_train=3000", "data.num_test=500", "data.search_val_size=500"]


@pytest.fixture(scope="module")
def head():
    h = start_head()
    yield h
    h.stop()


def test_pipeline_job_succeeds_with_outputs(head, tmp_path):
    sets = [f"storage_path={tmp_path / 'runs'}", "name=job", *TINY_DATA,
            "supernet.optim.epochs=1", "retrain.optim.epochs=1",
            "search.evolution.population=4", "search.evolution.top_k=2",
            "search.evolution.mutation_children=2", "search.evolution.crossover_children=2",
            "search.evolution.generations=1", "search.evaluator.calib_images=200",
            "search.evaluator.val_images=200"]
    job = submit(head, ["pipeline", "--config", "jobs/pipeline.yaml", *[a for s in sets for a in ("--set", s)]])
    wait_status(head, job, {"SUCCEEDED"}, 1200)
    logs = head.logs(job)
    assert "pipeline report:" in logs and "test top-1 / top-5" in logs
    runs = tmp_path / "runs"
    chosen = json.loads((runs / "job-search" / "chosen_arch.json").read_text())
    card = json.loads((runs / "job-retrain" / "export" / "model.json").read_text())
    assert card["arch"] == chosen["arch"]
    assert 0 <= card["test_top1"] <= 100 and card["export_max_abs_diff"] <= 1e-5
    assert (runs / "job-supernet" / "elastic_history.png").exists()
    assert list((runs / "job-search").glob("*.png"))


def test_stopped_job_resumes_from_checkpoint(head, tmp_path):
    args = ["supernet", "--config", "jobs/supernet.yaml",
            *[a for s in [f"run.storage_path={tmp_path / 'runs'}", "run.name=stopme", *TINY_DATA,
                          "space.width_mult=0.25", "optim.epochs=3", "elastic.max_workers=1",
                          "elastic.checkpoint_every_steps=10", "elastic.report_every_steps=5"]
              for a in ("--set", s)]]
    run_dir = tmp_path / "runs" / "stopme"
    first = submit(head, args)
    wait_status(head, first, {"RUNNING"}, 300)
    end = time.monotonic() + 600
    while not [p for p in run_dir.glob("checkpoint_step*") if (p / "meta.json").exists()]:
        assert time.monotonic() < end, head.logs(first)[-5000:]
        time.sleep(1)
    stop = head.job("stop", first)
    assert stop.returncode == 0, stop.stderr
    end = time.monotonic() + 120
    while head.status(first) != "STOPPED":
        assert time.monotonic() < end
        time.sleep(1)
    second = submit(head, args)
    wait_status(head, second, {"SUCCEEDED"}, 900)
    logs = head.logs(second)
    m = re.search(r"resumed at step (\d+)", logs)
    assert m and int(m.group(1)) >= 10, logs[-3000:]
