"""Config loading: typed dataclasses, --set overrides, one-line errors with exit code 2."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from elastic_nas.config import SupernetConfig, load_config
from elastic_nas.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_job_config_loads_with_overrides():
    cfg = load_config(SupernetConfig, "supernet",
                      ["elastic.max_workers=4", "optim.lr=0.2", "space.max_depths=[2,2,2,2,2]"])
    assert cfg.elastic.max_workers == 4
    assert cfg.optim.lr == 0.2 and isinstance(cfg.optim.lr, float)
    assert cfg.space.max_depths == [2, 2, 2, 2, 2]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.lrr=0.1", "did you mean 'optim.lr'"),
        ("elastc.max_workers=2", "did you mean 'elastic'"),
        ("elastic.max_workers=two", "expected an integer"),
        ("data.augment=3", "expected true or false"),
        ("space.name=resnet", "must be one of 'spos', 'cream'"),
        ("elastic.train_log_level=LOUD", "must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
        ("elastic.min_workers=3", "min_workers (3) > max_workers (2)"),
        ("elastic.per_worker_batch=0", "must be > 0"),
        ("sampling.flops_min=50", "flops_min (50.0) > flops_max (10.0)"),
        ("sandwich.random_macs_min=50", "random_macs_min (50.0) > random_macs_max (10.0)"),
        ("sandwich.smallest=tiny", "must be one of 'min_macs', 'deepest'"),
        ("sandwich.largest=huge", "must be one of 'max_macs', 'random_kernels'"),
        ("space.kernel_offsets=true", "needs space.name: cream and weight_sharing: entangled"),
        ("space.own_kernel_stages=[0]", "needs space.name: cream and weight_sharing: entangled"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    extra = {"sampling.flops_min": ["sampling.flops_max=10"],
             "sandwich.random_macs_min": ["sandwich.random_macs_max=10"]}.get(override.split("=")[0], [])
    with pytest.raises(ConfigError) as e:
        load_config(SupernetConfig, None, extra + [override])
    assert fragment in str(e.value)
    assert override.split("=")[0].split(".")[0] in str(e.value)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["space.own_kernel_stages=[0,0]"], "must be distinct choice stages 0-4, got [0, 0]"),
        (["space.own_kernel_stages=[5]"], "must be distinct choice stages 0-4, got [5]"),
        (["space.own_kernel_stages=[0]", "space.kernel_offsets=true"], "use one of them"),
    ],
)
def test_own_kernel_stages_are_checked(extra, fragment):
    cream = ["space.name=cream", "space.weight_sharing=entangled"]
    with pytest.raises(ConfigError, match="space.own_kernel_stages") as e:
        load_config(SupernetConfig, None, cream + extra)
    assert fragment in str(e.value)
    assert load_config(SupernetConfig, None, [*cream, "space.own_kernel_stages=[0,1]"]).space.own_kernel_stages == [0, 1]


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(SupernetConfig, tmp_path / "nope.yaml")


def test_cli_bad_config_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  momentom: 0.9\n")
    proc = subprocess.run([sys.executable, "-m", "elastic_nas", "supernet", "--config", str(bad)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "optim.momentom" in lines[0] and "momentum" in lines[0]
    assert "Traceback" not in proc.stderr


def test_pipeline_on_unwritable_storage_fails_before_any_work():
    """The pipeline checks its storage before the supernet trains for minutes: one line,
    exit 2, no credentials (tests/test_s3.py covers each step on a real endpoint)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "elastic_nas", "pipeline", "--set",
                           f"storage_path=s3://AKIDSECRET:hunter2@bucket/runs?endpoint_override=127.0.0.1:{closed}"
                           "&scheme=http&region=us-east-1"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to run.storage_path s3://bucket/runs" in lines[0], proc.stderr
    assert "AKIDSECRET" not in proc.stderr + proc.stdout and "hunter2" not in proc.stderr + proc.stdout
    assert "supernet cream" not in proc.stdout  # nothing started


def test_cli_help_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "elastic_nas", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0
    for cmd in ("data", "arch", "supernet"):
        assert cmd in proc.stdout


def test_supernet_step_config_trains_the_pipelines_supernet():
    """The README's promise: ``elastic-nas supernet`` with the shipped config trains the supernet
    the pipeline trains (same space, rule, data, recipe, seed); only the run's name and how often
    it checkpoints and reports differ."""
    import dataclasses

    from elastic_nas.config import PipelineConfig

    step, pipe = load_config(SupernetConfig, "supernet"), load_config(PipelineConfig, "pipeline").supernet

    def differ(a, b) -> set[str]:
        return {f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}

    assert differ(step, pipe) <= {"run", "elastic"}
    assert differ(step.elastic, pipe.elastic) <= {"checkpoint_every_steps", "report_every_steps"}
    assert step.run.seed == pipe.run.seed


def test_laptop_configs_compute_in_fp32_channels_last():
    """Every step of the laptop flow, alone or in the pipeline, trains, scores, retrains and tests
    in fp32 NHWC: about 2x the plain layout on CPUs (benchmarks/memory_format.py)."""
    from elastic_nas.config import PipelineConfig, RetrainConfig, SearchConfig, TestConfig

    pipe = load_config(PipelineConfig, "pipeline")
    sections = [load_config(SupernetConfig, "supernet").optim, load_config(SearchConfig, "search").evaluator,
                load_config(RetrainConfig, "retrain").optim, load_config(TestConfig, "test"),
                pipe.supernet.optim, pipe.search.evaluator, pipe.retrain.optim, pipe.test]
    assert all(s.channels_last and s.precision == "fp32" for s in sections)


def test_shipped_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch, capsys):
    from elastic_nas.cli import main
    from elastic_nas.config import PipelineConfig, find_config, shipped_configs

    monkeypatch.chdir(tmp_path)  # a pip-installed user has no jobs/ folder
    names = set(shipped_configs())
    assert {"supernet", "search", "retrain", "test", "pipeline"} <= names
    for spelling in ("pipeline", "pipeline.yaml", "jobs/pipeline.yaml"):
        assert find_config(spelling) == shipped_configs()["pipeline"]
    assert load_config(PipelineConfig, "pipeline").supernet.run.name == "pipeline-supernet"
    (tmp_path / "mine.yaml").write_text("name: mine")
    assert load_config(PipelineConfig, "mine.yaml").name == "mine"  # a file still wins
    with pytest.raises(ConfigError, match="no such file: other/supernet.yaml .*shipped configs"):
        find_config("other/supernet.yaml")  # a path elsewhere is never swapped for a shipped config
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert {line.split()[0] for line in listed} == names
    assert main(["configs", "search"]) == 0 and "evolution:" in capsys.readouterr().out


@pytest.mark.parametrize("override", ["optim.lr=.nan", "optim.lr=.inf", "elastic.checkpoint_every_s=.nan"])
def test_a_number_that_is_not_finite_is_refused(override):
    with pytest.raises(ConfigError, match="expected a finite number"):
        load_config(SupernetConfig, "supernet", [override])


def test_a_number_in_exponent_form_without_a_dot_is_a_number():
    """YAML 1.1 reads ``1e-3`` as a string; people write it for learning rates all the time."""
    assert load_config(SupernetConfig, "supernet", ["optim.lr=1e-3"]).optim.lr == 0.001
    assert load_config(SupernetConfig, "supernet", ["optim.lr=2E+1"]).optim.lr == 20.0
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(SupernetConfig, "supernet", ["optim.lr=1e-3x"])


def test_a_config_that_is_not_text_or_is_a_folder_is_one_line(tmp_path):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(SupernetConfig, binary)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(SupernetConfig, tmp_path)


def test_storage_path_on_a_file_is_refused_before_any_work(tmp_path):
    from elastic_nas.cluster.launcher import resolve_storage
    from elastic_nas.errors import UserError

    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(UserError, match="is a file, not a folder"):
        resolve_storage(load_config(SupernetConfig, "supernet", [f"run.storage_path={tmp_path / 'runs'}"]).run)


def test_supernet_checks_its_rule_before_it_builds_the_dataset(tmp_path):
    """A rule the space cannot train fails before the dataset is generated (or downloaded)."""
    from elastic_nas.train.supernet import train_supernet

    cfg = load_config(SupernetConfig, "supernet", [f"run.storage_path={tmp_path / 'runs'}",
                                                  f"data.path={tmp_path / 'data'}", "sampling.flops_max=300"])
    with pytest.raises(ConfigError, match="sandwich.progressive"):
        train_supernet(cfg)
    assert not (tmp_path / "data").exists()


def test_pipeline_checks_the_search_and_test_before_the_supernet_trains(tmp_path):
    from elastic_nas.config import PipelineConfig
    from elastic_nas.pipeline import check_later_steps

    (tmp_path / "file").write_text("x")
    base = [f"storage_path={tmp_path / 'runs'}"]
    check_later_steps(load_config(PipelineConfig, "pipeline", base))
    for override, fragment in [("search.latency_table=/nonexistent/lat.json", "search.latency_table: cannot read"),
                               ("search.space.name=spos", "search.space: differs"),
                               ("search.evaluator.val_images=999999", "search.evaluator.val_images: 999999 >"),
                               ("search.evolution.macs_max=0.001", "search.evolution.macs_max: no architecture")]:
        with pytest.raises(ConfigError, match=fragment):
            check_later_steps(load_config(PipelineConfig, "pipeline", base + [override]))
    with pytest.raises(ConfigError, match="test.output: .* is a file"):
        load_config(PipelineConfig, "pipeline", base + [f"test.output={tmp_path / 'file'}"])


@pytest.mark.parametrize("name", ["supernet", "retrain", "search", "scale", "pipeline"])
def test_data_prepare_reads_any_step_config(name):
    from elastic_nas.data.cli import job_config

    assert job_config(name, ["data.num_train=3000"]).data.num_train == 3000
    with pytest.raises(ConfigError, match="foo: unknown key"):
        job_config(name, ["foo=1"])


def test_data_prepare_names_the_steps_own_keys_in_its_errors(tmp_path):
    from elastic_nas.data.cli import job_config

    retrain = tmp_path / "retrain.yaml"
    retrain.write_text("arch:\n  value: [0]\neval_batch: 0\n")
    with pytest.raises(ConfigError, match="eval_batch: must be > 0"):  # not a supernet's "arch: unknown key"
        job_config(str(retrain), [])
    with pytest.raises(ConfigError, match="retrain.eval_batch: must be > 0"):
        job_config("pipeline", ["retrain.eval_batch=0"])


def test_a_number_past_floats_range_is_one_line():
    with pytest.raises(ConfigError, match="expected a finite number"):
        load_config(SupernetConfig, "supernet", ["optim.lr=1" + "0" * 400])
