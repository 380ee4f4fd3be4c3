"""Network shapes, noise layers, device selection, and checkpoints that never run code."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from bvmesh.errors import BvmeshError, WeightsError
from bvmesh.model import FORMAT, build_model, load_model, save_checkpoint
from bvmesh.networks import InitNet, Locator, NoiseLayer, PropNet, select_device

try:
    from conftest import TINY_CONFIG
except ImportError:
    from tests.conftest import TINY_CONFIG


def test_init_net_outputs_every_scale():
    net = InitNet(3, (4, 4, 4)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 128, 128))
    assert [tuple(o.shape) for o in out] == [(2, 4, 32, 32), (2, 4, 64, 64), (2, 4, 128, 128)]
    assert all(torch.isfinite(o).all() for o in out)


def test_prop_net_predicts_four_slices_at_two_scales():
    net = PropNet(4, (4, 4)).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 5, 128, 128), torch.softmax(torch.rand(3, 5, 128, 128), 1))
    assert [tuple(o.shape) for o in out] == [(3, 4, 5, 64, 64), (3, 4, 5, 128, 128)]
    with pytest.raises(RuntimeError):  # a mask with the wrong class count is refused
        net(torch.rand(1, 5, 128, 128), torch.rand(1, 3, 128, 128))


def test_locator_output():
    with torch.no_grad():
        assert tuple(Locator(4).eval()(torch.rand(2, 1, 128, 128)).shape) == (2, 2, 128, 128)


def test_noise_layer_acts_only_in_training():
    layer = NoiseLayer()
    x = torch.rand(4, 5, 32, 32)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    torch.manual_seed(0)
    noisy = layer(x)
    assert not torch.equal(noisy, x)
    assert (noisy - x).abs().max() < 1.0  # noise, not a different image


@pytest.mark.parametrize("make", [lambda: (InitNet(3, (4, 4, 4)), (torch.rand(2, 1, 128, 128),)),
                                  lambda: (PropNet(3, (4, 4)), (torch.rand(2, 5, 128, 128),
                                                                torch.rand(2, 4, 128, 128)))])
def test_networks_are_deterministic_in_eval_and_noisy_in_train(make):
    torch.manual_seed(0)
    net, inputs = make()
    net.train()
    with torch.no_grad():
        a, b = net(*inputs)[-1], net(*inputs)[-1]
    assert not torch.equal(a, b)  # the noise layer draws new noise each pass
    net.eval()
    with torch.no_grad():
        a, b = net(*inputs)[-1], net(*inputs)[-1]
    assert torch.equal(a, b)


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    for bad in ("banana", "", "cuda:abc", "CPU", "meta", "xla"):
        with pytest.raises(BvmeshError, match="--device"):
            select_device(bad)


def test_select_device_refuses_cuda_where_there_is_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BvmeshError, match="CUDA is not available.*--device cpu"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(BvmeshError, match="cuda:3.*1 CUDA device"):
        select_device("cuda:3")


# ---- checkpoints ------------------------------------------------------------------------


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(TINY_CONFIG).eval()


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny()
    path = save_checkpoint(model, tmp_path / "m.pt", record={"epochs": 3})
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.record == {"epochs": 3}
    assert loaded.classes == ("lv_pool", "lv_myo", "rv_pool")
    x = torch.rand(2, 1, 128, 128)
    s, m = torch.rand(1, 5, 128, 128), torch.softmax(torch.rand(1, 4, 128, 128), 1)
    with torch.no_grad():
        assert torch.equal(model.init(x)[-1], loaded.init(x)[-1])
        assert torch.equal(model.prop(s, m)[-1], loaded.prop(s, m)[-1])
        assert torch.equal(model.locator(x), loaded.locator(x))
    assert not loaded.init.training  # loaded for inference
    # A differently seeded model really differs (so the equality above means something).
    with torch.no_grad():
        assert not torch.equal(tiny(1).init(x)[-1], loaded.init(x)[-1])


def test_a_model_prepared_for_inference_gives_the_same_outputs_and_cannot_be_saved(tmp_path):
    """Batch norms folded into the convolutions (with statistics far from the identity, so
    the fold has work to do) and channels-last weights: the same logits to float rounding."""
    model = tiny()
    for module in [*model.init.modules(), *model.prop.modules(), *model.locator.modules()]:
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.2, 3)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    model.eval()
    x = torch.rand(2, 1, 128, 128)
    s, m = torch.rand(1, 5, 128, 128), torch.softmax(torch.rand(1, 4, 128, 128), 1)
    with torch.no_grad():
        before = model.init(x)[-1], model.prop(s, m)[-1], model.locator(x)
        fast = model.for_inference()
        after = fast.init(x)[-1], fast.prop(s, m)[-1], fast.locator(x)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in fast.init.modules())
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
        assert a.abs().max() > 0.1  # outputs that mean something
    with pytest.raises(WeightsError, match="prepared for inference"):
        save_checkpoint(fast, tmp_path / "m.pt")


class Payload:
    """A class that a weights_only load must refuse to rebuild."""

    def __init__(self):
        self.format = FORMAT


def foreign_files(tmp_path, good):
    """Files that are not bvmesh checkpoints, each with why it is not."""
    files = {}
    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "plain.pt")
    files["plain dict"] = tmp_path / "plain.pt"
    with open(tmp_path / "class.pkl", "wb") as fh:
        pickle.dump({"format": FORMAT, "config": Payload()}, fh)
    files["pickle with a class"] = tmp_path / "class.pkl"
    torch.save({"format": FORMAT, "config": Payload()}, tmp_path / "class.pt")
    files["torch.save of a class"] = tmp_path / "class.pt"
    (tmp_path / "random.pt").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    files["random bytes"] = tmp_path / "random.pt"
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    files["truncated"] = tmp_path / "truncated.pt"
    (tmp_path / "empty.pt").write_bytes(b"")
    files["empty"] = tmp_path / "empty.pt"
    torch.save([1, 2, 3], tmp_path / "list.pt")
    files["a list"] = tmp_path / "list.pt"
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_weights_are_refused_with_a_clear_message(tmp_path):
    good = save_checkpoint(tiny(), tmp_path / "good.pt")
    for why, path in foreign_files(tmp_path, good).items():
        with pytest.raises(WeightsError) as info:
            load_model(path)
        message = str(info.value)
        assert message.startswith(str(path)), why
        assert "bvmesh weights file" in message and "\n" not in message, why


def test_mismatched_or_newer_checkpoints_are_refused(tmp_path):
    payload = torch.load(save_checkpoint(tiny(), tmp_path / "m.pt"), weights_only=True)
    wider = {**payload, "config": json.dumps({**json.loads(payload["config"]), "init_widths": [8, 8, 8]})}
    torch.save(wider, tmp_path / "wider.pt")
    with pytest.raises(WeightsError, match="do not match their recorded architecture"):
        load_model(tmp_path / "wider.pt")
    torch.save({**payload, "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(WeightsError, match="newer bvmesh"):
        load_model(tmp_path / "future.pt")
    with pytest.raises(WeightsError, match="no such weights file"):
        load_model(tmp_path / "absent.pt")


class WritesAFile:
    """Unpickling this calls exec(), which writes ``marker``: what a malicious file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loading_never_executes_code(tmp_path):
    marker = tmp_path / "executed.txt"
    # The payload really runs under a plain pickle load (the test would catch it) ...
    pickle.loads(pickle.dumps(WritesAFile(marker)))
    assert marker.exists()
    marker.unlink()
    # ... but not when bvmesh loads it, whatever container it comes in.
    torch.save({"format": FORMAT, "config": WritesAFile(marker)}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"format": FORMAT, "init": WritesAFile(marker)}, fh)
    for path in (tmp_path / "evil.pt", tmp_path / "evil.pkl"):
        with pytest.raises(WeightsError):
            load_model(path)
        assert not marker.exists(), path.name


def test_load_weights_reports_the_file_hash(tiny_weights):
    import hashlib

    from bvmesh.pipeline import load_weights

    model, info = load_weights(str(tiny_weights), "cpu")
    assert info["sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert info["path"] == str(tiny_weights) and info["classes"] == list(model.classes)
