"""Retrain arch selection, and `test`: evaluation + export whose outputs match the checkpoint."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from elastic_nas.config import ArchSelectConfig, DataConfig, RetrainConfig, SpaceConfig, TestConfig
from elastic_nas.elastic.checkpoint import checkpoint_dir_name, write_checkpoint
from elastic_nas.errors import ArchError, ConfigError, UserError
from elastic_nas.spaces import build_space
from elastic_nas.train.evaluate import load_exported, run_test, subnet_fingerprint
from elastic_nas.train.retrain import select_arch
from tests.conftest import follows_input, live_bn

SMALL = SpaceConfig(width_mult=0.25)
ARCH = [0, 1, 2, 3] * 5


def test_select_explicit_published_and_bad():
    cfg = RetrainConfig(arch=ArchSelectConfig(value=ARCH), space=SMALL)
    assert select_arch(cfg) == (SMALL, ARCH)
    cfg = RetrainConfig(arch=ArchSelectConfig(value="cream-287"), space=SMALL)
    space_cfg, arch = select_arch(cfg)
    cream = build_space(space_cfg)
    assert space_cfg.name == "cream" and space_cfg.input_size == SMALL.input_size
    assert cream.macs(arch) == cream.macs(cream.validate([[0], [3], [3, 3], [3, 1, 3], [3, 3, 3, 3], [3, 3, 3], [0]]))
    with pytest.raises(ArchError):
        select_arch(RetrainConfig(arch=ArchSelectConfig(value="[9, 9]"), space=SMALL))
    with pytest.raises(ArchError, match="published name"):
        select_arch(RetrainConfig(arch=ArchSelectConfig(value="spos-999m"), space=SMALL))


def test_select_from_search_by_budget(tmp_path):
    space = build_space(SMALL)
    rng = np.random.default_rng(0)
    archs = sorted({space.sample(rng) for _ in range(20)}, key=space.macs)
    small, big = archs[0], archs[-1]
    (tmp_path / "chosen_arch.json").write_text(json.dumps({"space": asdict(SMALL), "arch": list(big)}))
    (tmp_path / "best_per_budget.json").write_text(json.dumps([
        {"budget_macs": space.macs(small), "arch": list(small), "macs": space.macs(small), "accuracy": 50.0},
        {"budget_macs": space.macs(big), "arch": list(big), "macs": space.macs(big), "accuracy": 60.0},
    ]))
    pick = lambda budget: select_arch(RetrainConfig(arch=ArchSelectConfig(search=str(tmp_path), budget=budget)))[1]
    assert pick(0) == list(big)
    assert pick(space.macs(small) / 1e6) == list(small)
    assert pick(space.macs(big) / 1e6) == list(big)
    with pytest.raises(UserError, match="no searched arch within"):
        pick(space.macs(small) / 2e6)


def test_arch_select_needs_exactly_one_source():
    from elastic_nas.config import load_config

    with pytest.raises(ConfigError, match="exactly one"):
        load_config(RetrainConfig, None, ["arch.search=", "arch.value="])


@pytest.mark.parametrize("fmt", ["torch.export", "torchscript"])
def test_test_command_evaluates_and_export_matches_checkpoint(tmp_path, fmt):
    data = DataConfig(path=str(tmp_path / "data"), num_train=600, num_test=200, search_val_size=100)
    space = build_space(SMALL)
    torch.manual_seed(0)
    model = space.build_subnet(space.validate(ARCH))
    live_bn(model, model, torch.randn(16, 3, 32, 32))
    write_checkpoint(tmp_path / "run" / checkpoint_dir_name(7), {"model": model.state_dict()},
                     {"step": 7, "fingerprint": subnet_fingerprint(SMALL, ARCH, data)})
    info = run_test(TestConfig(checkpoint=str(tmp_path / "run"), export=fmt, output=str(tmp_path / "out")))
    card = json.loads((tmp_path / "out" / "model.json").read_text())
    assert card["arch"] == ARCH and card["macs"] == space.macs(ARCH) and card["test_images"] == 200
    assert 0 <= card["test_top1"] <= card["test_top5"] <= 100
    exported = load_exported(tmp_path / "out" / card["export"].rsplit("/", 1)[-1])
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        want = model.eval()(x)
        assert follows_input(want) and torch.allclose(exported(x), want, atol=1e-5)
    assert info["export_max_abs_diff"] <= 1e-5


def test_test_refuses_a_supernet_checkpoint(tmp_path):
    write_checkpoint(tmp_path / checkpoint_dir_name(1), {"model": {}}, {"step": 1, "fingerprint": {"kind": "supernet"}})
    with pytest.raises(UserError, match="retrained subnet"):
        run_test(TestConfig(checkpoint=str(tmp_path)))
