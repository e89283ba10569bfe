"""Latency lookup tables: the parts are the subnet's own blocks, an arch's latency is the sum
of its parts, a table round-trips and refuses another space, latency bounds hold in the
search's generators, and ``elastic-nas latency build`` / ``arch info`` work from the shell
(with the measuring done in a Ray task on request)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from elastic_nas.config import SpaceConfig
from elastic_nas.errors import ConfigError
from elastic_nas.search.evolution import Constraints, EvolutionSettings, make_generator
from elastic_nas.search.runner import SpaceCost
from elastic_nas.spaces import build_space
from elastic_nas.spaces.latency import FORMAT, LatencyTable, build_table
from tests.ray_utils import CliRun

SPACES = {
    "spos": SpaceConfig(name="spos", width_mult=0.25),
    "spos-channels": SpaceConfig(name="spos", width_mult=0.25, channel_search=True),
    "cream": SpaceConfig(name="cream", input_size=32, stem_stride=2, width_mult=0.5, max_depths=[2, 3, 3, 3, 2]),
}


@pytest.fixture(scope="module")
def tables():
    """One quickly measured table per space (few repeats: the figures are not the point here)."""
    return {name: build_table(build_space(cfg), warmup=1, repeats=2, max_copies=2) for name, cfg in SPACES.items()}


@pytest.mark.parametrize("name", list(SPACES))
def test_parts_are_the_subnets_own_blocks(name):
    space = build_space(SPACES[name])
    parts = space.latency_parts()
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = space.sample(rng)
        chosen = [parts.fixed[k] for k in parts.fixed] + [parts.choices[p][c] for p, c in space.latency_keys(arch)]
        # the same modules: their parameters add up to the subnet's, and they run at its shapes
        assert sum(p.numel() for part in chosen for p in part.make().parameters()) == space.params(arch)
        x = torch.randn(1, 3, space.cfg.input_size, space.cfg.input_size)
        with torch.no_grad():
            y = parts.fixed["stem"].make().eval()(x)
            for part in chosen[2:]:
                assert y.shape[1:] == (part.chs, part.size, part.size)
                y = part.make().eval()(y)
            head = parts.fixed["head"]
            assert y.shape[1:] == (head.chs, head.size, head.size)


@pytest.mark.parametrize("name", list(SPACES))
def test_an_archs_latency_is_the_sum_of_its_parts(tables, name):
    space, table = build_space(SPACES[name]), tables[name]
    rng = np.random.default_rng(1)
    for _ in range(10):
        arch = space.sample(rng)
        parts = sum(table.choices_ms[p][c] for p, c in space.latency_keys(arch))
        assert table.predict_ms(space, arch) == pytest.approx(sum(table.fixed_ms.values()) + parts)
        assert table.predict_ms(space, arch) > 0
    larger = table.predict_ms(space, space.largest_arch())
    assert larger > table.predict_ms(space, space.smallest_arch())


def test_a_table_round_trips_and_refuses_another_space(tables, tmp_path):
    table = tables["cream"]
    path = table.save(tmp_path / "t.json")
    back = LatencyTable.load(path)
    assert back.to_json() == table.to_json() and back.tags["precision"] == "fp32" and back.tags["batch"] == 1
    assert json.loads(path.read_text())["format"] == FORMAT
    back.check(SPACES["cream"])
    back.check(replace(SPACES["cream"], weight_sharing="entangled"))  # how a supernet stores weights: no matter
    with pytest.raises(ConfigError, match="input_size: table 32, search 64"):
        back.check(replace(SPACES["cream"], input_size=64))
    with pytest.raises(ConfigError, match="name"):
        back.check(SPACES["spos"])
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ConfigError, match="not an elastic-nas latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({**json.loads(path.read_text()), "format": "elastic-nas latency table 1"}))
    with pytest.raises(ConfigError, match="from an earlier elastic-nas .* rebuild it"):  # slower depthwise convs
        LatencyTable.load(tmp_path / "old.json")
    (tmp_path / "short.json").write_text(json.dumps({"format": FORMAT, "tags": {}, "fixed_ms": {}}))
    with pytest.raises(ConfigError, match="needs tags"):
        LatencyTable.load(tmp_path / "short.json")


def test_latency_bounds_hold_in_the_search_generators(tables):
    space, table = build_space(SPACES["spos"]), tables["spos"]
    cost = SpaceCost(space, table)
    rng = np.random.default_rng(2)
    median = float(np.median([cost(space.sample(rng))[2] for _ in range(200)]))
    settings = EvolutionSettings(population=8, top_k=3, mutation_children=4, crossover_children=4, generations=2,
                                 max_tries=200)
    for method in ("evolution", "random"):
        gen = make_generator(method, space, cost, Constraints(latency_max_ms=median), settings, seed=0)
        seen = 0
        while (fresh := gen.next_generation()) is not None:
            for c in fresh:
                assert 0 < c.latency_ms <= median and c.latency_ms == round(table.predict_ms(space, c.arch), 4)
                gen.tell(c.arch, float(c.macs))
                seen += 1
        assert seen == settings.budget
        state = gen.get_state()  # a resumed search keeps every candidate's latency
        again = make_generator(method, space, cost, Constraints(latency_max_ms=median), settings, seed=0)
        again.set_state(state)
        assert [c.latency_ms for c in again.candidates.values()] == [c.latency_ms for c in gen.candidates.values()]


def latency_cli(tmp_path, *extra: str) -> CliRun:
    return CliRun(["latency", "build", "--set", "space.name=spos", "--set", "space.width_mult=0.25",
                   "--set", "space.input_size=32", "--set", "space.stem_stride=1", "--warmup", "1", "--repeats", "2",
                   "--out", str(tmp_path / "table.json"), *extra])


def test_latency_build_and_arch_info_from_the_shell(tmp_path):
    run = latency_cli(tmp_path)
    assert run.finish(300) == 0, run.output()[-3000:]
    assert run.output().count("elastic-nas: latency position") == 20  # one line per block position
    table = LatencyTable.load(tmp_path / "table.json")
    assert table.tags["space"]["width_mult"] == 0.25 and table.tags["threads"] == 1
    arch = [2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3]
    info = CliRun(["arch", "info", "--arch", json.dumps(arch), "--latency-table", str(tmp_path / "table.json")])
    assert info.finish(60) == 0, info.output()
    out = json.loads(info.output()[info.output().index("{"):])
    space = build_space(SpaceConfig(**table.tags["space"]))
    assert out["latency_ms"] == round(table.predict_ms(space, arch), 4) and out["macs"] == space.macs(arch)
    for bad, words in ((["--ray-resources", "[1]"], "--ray-resources"), (["--repeats", "0"], "--repeats"),
                       (["--set", "space.name=resnet"], "space.name"), (["--out", str(tmp_path)], "--out")):
        r = latency_cli(tmp_path / "bad", *bad)
        assert r.finish(60) == 2 and words in r.output(), r.output()
        assert len(r.output().strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    if not torch.cuda.is_available():
        r = latency_cli(tmp_path / "bad", "--device", "cuda")
        assert r.finish(60) == 2 and "no CUDA device" in r.output()
    other = CliRun(["arch", "info", "--arch", json.dumps(arch), "--space", "cream",
                    "--latency-table", str(tmp_path / "table.json")])
    assert other.finish(60) == 2 and "spos space" in other.output()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_latency_build_as_a_ray_task(tmp_path):
    run = latency_cli(tmp_path, "--ray-resources", '{"CPU": 1}')
    assert run.finish(240) == 0, run.output()[-3000:]
    assert "as a Ray task" in run.output()
    table = LatencyTable.load(tmp_path / "table.json")
    assert len(table.settings["ray_node_id"]) > 10 and len(table.choices_ms) == 20
