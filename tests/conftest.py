import os

import pytest

# Keep every test cluster on 127.0.0.1 (see ../shared/reference/ray-notes.md) and make
# Ray Train react quickly; both must be set before Ray starts.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "3")
os.environ.setdefault("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from elastic_nas.config import SpaceConfig  # noqa: E402  (after the Ray environment above)

# One config per space variant, shared by the space and cost-model tests.
SPACE_CONFIGS = {
    "spos": SpaceConfig(name="spos"),
    "spos-channel": SpaceConfig(name="spos", channel_search=True),
    "cream": SpaceConfig(name="cream", max_depths=[4, 4, 5, 4, 4]),  # Cream's own supernet
    # Entangled weights (smaller kernels the centre of the largest, expansions leading channels)
    "spos-channel-entangled": SpaceConfig(name="spos", channel_search=True, weight_sharing="entangled"),
    "cream-entangled": SpaceConfig(name="cream", max_depths=[2, 3, 3, 3, 2], weight_sharing="entangled"),
    "cream-entangled-transform": SpaceConfig(name="cream", max_depths=[2, 3, 3, 3, 2], weight_sharing="entangled",
                                             kernel_transform=True),
    "cream-entangled-offsets": SpaceConfig(name="cream", max_depths=[2, 3, 3, 3, 2], weight_sharing="entangled",
                                           kernel_offsets=True),
    "cream-entangled-own": SpaceConfig(name="cream", max_depths=[2, 3, 3, 3, 2], weight_sharing="entangled",
                                       own_kernel_stages=[0, 1]),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny nets on a shared 2-core CPU: extra intra-op threads only add contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One synthetic-dataset cache per test module."""
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture
def cluster():
    from tests.ray_utils import slot_cluster

    c = slot_cluster()
    yield c
    c.shutdown()


def live_bn(model, forward, x, seed: int = 0):
    """BN as after training, for tests that compare two nets' outputs: random affine weights
    (the zero-initialised last BN of a residual branch opens it) and running statistics of
    ``x`` through ``forward``. At init, in eval mode, the signal fades block by block and every
    output is one constant, so any two nets 'agree'; ``follows_input`` checks it does not."""
    import torch

    from elastic_nas.spaces.bn import recalibrate_bn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    recalibrate_bn(model, forward, [x])
    return model


def follows_input(out) -> bool:
    """Whether a batch's outputs differ between its first two inputs: an equality of outputs means something."""
    return bool((out[0] - out[1]).abs().max() > 1e-2)
