"""Tests of datadistill.models: shapes, parameter counts, determinism, vmap, errors, gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from datadistill.errors import ConfigError, UnknownNameError
from datadistill.models import (
    NETWORKS,
    ConvNet,
    FRePoConvNet,
    ResNet18,
    get_network,
    network_names,
)

NAMES = network_names()
# (channels, im_size): Fashion-MNIST/MNIST, CIFAR-10, sklearn digits
SIZES = [(1, (28, 28)), (3, (32, 32)), (1, (8, 8))]
EXPECTED_NAMES = {
    "convnet",
    *(f"convnet-d{d}" for d in range(1, 6)),
    "convnet-w32",
    "convnet-w64",
    "convnet-w256",
    "convnet-bn",
    "convnet-ln",
    "convnet-gn",
    "convnet-nn",
    "convnet-mp",
    "convnet-np",
    "convnet-sigmoid",
    "convnet-leakyrelu",
    "resnet18",
    "resnet18-bn",
    "resnet18-bn-ap",
    "vgg11",
    "vgg11-bn",
    "alexnet",
    "alexnet-bn",
    "lenet",
    "mlp",
    "frepo-convnet",
    "frepo-convnet-bn",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machine's 2 cores are shared: intra-op threads oversubscribe and crawl
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(name: str, channels: int, im_size: tuple[int, int], seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_network(name, channels=channels, num_classes=10, im_size=im_size)


def test_registered_names() -> None:
    assert set(NAMES) == EXPECTED_NAMES
    assert sorted(NAMES) == NAMES
    assert all(name in NETWORKS for name in EXPECTED_NAMES)


@pytest.mark.parametrize("channels,im_size", SIZES, ids=["28x28x1", "32x32x3", "8x8x1"])
@pytest.mark.parametrize("name", NAMES)
def test_shapes(name: str, channels: int, im_size: tuple[int, int]) -> None:
    net = _build(name, channels, im_size)
    assert isinstance(net.embed_dim, int) and net.embed_dim > 0
    x = torch.randn(2, channels, *im_size)
    for train in (False, True):
        net.train(train)
        with torch.no_grad():
            logits = net(x)
            feat = net.embed(x)
        assert logits.shape == (2, 10) and logits.dtype == torch.float32
        assert feat.shape == (2, net.embed_dim) and feat.dtype == torch.float32
        assert torch.isfinite(logits).all() and torch.isfinite(feat).all()
        # embed is exactly what feeds the final Linear
        assert net.classifier.in_features == net.embed_dim


@pytest.mark.parametrize(
    "name",
    ["convnet", "resnet18", "vgg11", "alexnet", "lenet", "mlp", "frepo-convnet", "resnet18-bn-ap"],
)
def test_shapes_64x64x3(name: str) -> None:
    net = _build(name, 3, (64, 64)).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_convnet3_embed_dims() -> None:
    assert get_network("convnet", 1, 10, (28, 28)).embed_dim == 128 * 4 * 4 == 2048
    assert get_network("convnet", 3, 10, (32, 32)).embed_dim == 2048
    assert get_network("convnet", 1, 10, (8, 8)).embed_dim == 128  # 8 -> 4 -> 2 -> 1
    assert get_network("convnet", 3, 10, (64, 64)).embed_dim == 128 * 8 * 8
    # first conv pads by 3 only for 1-channel 28x28 (DC convention)
    assert get_network("convnet", 1, 10, (28, 28)).features[0].padding == (3, 3)
    assert get_network("convnet", 3, 10, (32, 32)).features[0].padding == (1, 1)
    assert get_network("convnet", 1, 10, (8, 8)).features[0].padding == (1, 1)
    # depth 5 on 8x8: the pools after 1x1 are skipped
    assert get_network("convnet-d5", 1, 10, (8, 8)).embed_dim == 128


def test_other_embed_dims() -> None:
    assert get_network("frepo-convnet", 3, 10, (32, 32)).embed_dim == 512 * 4 * 4
    assert get_network("frepo-convnet", 1, 10, (28, 28)).embed_dim == 512 * 4 * 4
    for name in ("resnet18", "resnet18-bn", "resnet18-bn-ap"):
        assert get_network(name, 1, 10, (28, 28)).embed_dim == 512
    assert get_network("vgg11", 3, 10, (32, 32)).embed_dim == 512
    assert get_network("vgg11", 1, 10, (28, 28)).embed_dim == 512
    assert get_network("alexnet", 3, 10, (32, 32)).embed_dim == 192 * 4 * 4
    assert get_network("alexnet", 1, 10, (28, 28)).embed_dim == 192 * 4 * 4
    assert get_network("lenet", 1, 10, (28, 28)).fc_1.in_features == 16 * 5 * 5
    assert get_network("lenet", 3, 10, (32, 32)).fc_1.in_features == 16 * 5 * 5
    assert get_network("lenet", 1, 10, (28, 28)).embed_dim == 84
    assert get_network("mlp", 1, 10, (28, 28)).fc_1.in_features == 784
    assert get_network("mlp", 3, 10, (32, 32)).embed_dim == 128


def test_convnet3_parameter_count() -> None:
    net = get_network("convnet", 3, 10, (32, 32))
    conv1 = 3 * 128 * 3 * 3 + 128  # 3,584
    conv23 = 128 * 128 * 3 * 3 + 128  # 147,584 each
    norm = 2 * 128  # GroupNorm(128, 128) weight + bias: 256 each
    linear = 128 * 4 * 4 * 10 + 10  # 20,490
    expected = conv1 + 2 * conv23 + 3 * norm + linear
    assert expected == 320_010
    assert sum(p.numel() for p in net.parameters()) == expected


@pytest.mark.parametrize("name", NAMES)
def test_determinism(name: str) -> None:
    a = _build(name, 3, (32, 32), seed=123)
    b = _build(name, 3, (32, 32), seed=123)
    c = _build(name, 3, (32, 32), seed=124)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


@pytest.mark.parametrize(
    "name",
    [
        "convnet",
        "convnet-ln",
        "convnet-gn",
        "convnet-nn",
        "convnet-sigmoid",
        "frepo-convnet",
        "mlp",
        "lenet",
    ],
)
def test_vmap_over_stacked_params(name: str) -> None:
    models = [_build(name, 3, (32, 32), seed=s) for s in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(2, 3, 32, 32)

    def run(p: dict, b: dict, inp: torch.Tensor, embed_only: bool) -> torch.Tensor:
        return functional_call(base, (p, b), (inp,), {"embed_only": embed_only})

    with torch.no_grad():
        logits = vmap(lambda p, b, i: run(p, b, i, False), in_dims=(0, 0, None))(params, buffers, x)
        feats = vmap(lambda p, b, i: run(p, b, i, True), in_dims=(0, 0, None))(params, buffers, x)
        for k, m in enumerate(models):
            torch.testing.assert_close(logits[k], m(x), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(feats[k], m.embed(x), rtol=1e-4, atol=1e-5)


def test_vmap_over_inputs_and_grad_of_params() -> None:
    # per-model inputs and functional gradients, as methods with model pools do
    # float64: some CPUs run fp32 convolutions with reduced internal precision (oneDNN), which
    # would make vmapped and plain gradients differ by more than rounding
    net = _build("convnet", 1, (28, 28)).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    xs = torch.randn(3, 2, 1, 28, 28, dtype=torch.float64)

    def loss(p: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(net, p, (x,)).square().mean()

    grads = vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    assert grads["classifier.weight"].shape == (3, 10, 2048)
    ref = torch.func.grad(loss)(params, xs[1])
    torch.testing.assert_close(grads["features.0.weight"][1], ref["features.0.weight"])


def test_unknown_name() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_network("convnet-9000", 3, 10, (32, 32))
    message = str(info.value)
    assert "convnet-9000" in message
    for name in ("convnet", "resnet18", "frepo-convnet", "mlp"):
        assert name in message
    assert isinstance(info.value, KeyError)


def test_names_are_case_insensitive() -> None:
    assert isinstance(get_network("ConvNet", 3, 10, (32, 32)), ConvNet)


@pytest.mark.parametrize(
    "args",
    [(0, 10, (32, 32)), (3, 0, (32, 32)), (3, 10, (32,)), (3, 10, (0, 32)), (3, 10, "32x32")],
)
def test_bad_arguments(args: tuple) -> None:
    with pytest.raises(ConfigError):
        get_network("convnet", *args)


def test_bad_options() -> None:
    with pytest.raises(ConfigError):
        ConvNet(3, 10, (32, 32), norm="weird")
    with pytest.raises(ConfigError):
        ConvNet(3, 10, (32, 32), act="tanh")
    with pytest.raises(ConfigError):
        ConvNet(3, 10, (32, 32), pool="lp")
    with pytest.raises(ConfigError):
        ConvNet(3, 10, (32, 32), width=30, norm="group")  # 4 groups
    with pytest.raises(ConfigError):
        ResNet18(3, 10, (32, 32), norm="layer")
    with pytest.raises(ConfigError):
        FRePoConvNet(3, 10, (32, 32), init="xavier")


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_input(name: str) -> None:
    net = _build(name, 1, (8, 8)).train()
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    net(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_gradient_reaches_input_convnet_cifar() -> None:
    net = _build("convnet", 3, (32, 32))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    net.embed(x).mean(0).square().sum().backward()  # DM-style loss on embeddings
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_convnet_layers() -> None:
    net = ConvNet(3, 10, (32, 32))
    kinds = [type(m) for m in net.features]
    assert kinds == [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d] * 3
    gn = net.features[1]
    assert gn.num_groups == 128 and gn.num_channels == 128 and gn.affine
    assert get_network("convnet-ln", 3, 10, (32, 32)).features[1].num_groups == 1
    assert get_network("convnet-gn", 3, 10, (32, 32)).features[1].num_groups == 4
    assert isinstance(get_network("convnet-bn", 3, 10, (32, 32)).features[1], nn.BatchNorm2d)
    assert isinstance(get_network("convnet-mp", 3, 10, (32, 32)).features[3], nn.MaxPool2d)
    assert get_network("convnet-np", 3, 10, (32, 32)).embed_dim == 128 * 32 * 32
    assert get_network("convnet-w64", 3, 10, (32, 32)).embed_dim == 64 * 16
    leaky = get_network("convnet-leakyrelu", 3, 10, (32, 32)).features[2]
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == 0.01
    assert not any(getattr(m, "inplace", False) for m in net.modules())


def test_frepo_structure() -> None:
    net = get_network("frepo-convnet-bn", 3, 10, (32, 32))
    kinds = [type(m) for m in net.features]
    # norm BEFORE the conv of blocks 2 and 3, none on the image, none after the last block
    assert kinds == [
        nn.Conv2d,
        nn.ReLU,
        nn.AvgPool2d,
        nn.BatchNorm2d,
        nn.Conv2d,
        nn.ReLU,
        nn.AvgPool2d,
        nn.BatchNorm2d,
        nn.Conv2d,
        nn.ReLU,
        nn.AvgPool2d,
    ]
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512]
    bns = [m for m in net.features if isinstance(m, nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == [128, 256] and bns[0].momentum == 0.9
    plain = get_network("frepo-convnet", 1, 10, (28, 28))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in plain.modules())
    assert plain.features[0].padding == (3, 3)
    lecun = FRePoConvNet(3, 10, (32, 32), init="lecun")
    w = lecun.features[3].weight  # conv 128 -> 256, fan_in 1152
    assert abs(w.std().item() - (1 / 1152) ** 0.5) < 0.1 * (1 / 1152) ** 0.5
    assert torch.count_nonzero(lecun.features[3].bias) == 0


def test_resnet_variants() -> None:
    plain = get_network("resnet18", 3, 10, (32, 32))
    assert isinstance(plain.bn1, nn.GroupNorm) and plain.bn1.num_groups == 64
    assert plain.conv1.stride == (1, 1) and plain.conv1.kernel_size == (3, 3)
    assert plain.layer2[0].conv1.stride == (2, 2)
    assert plain.final_map_size == (4, 4)
    ap = get_network("resnet18-bn-ap", 3, 10, (32, 32))
    assert all(m.stride == (1, 1) for m in ap.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(ap.layer2[0].pool, nn.AvgPool2d)
    assert isinstance(ap.bn1, nn.BatchNorm2d)
    assert ap.final_map_size == (4, 4)
    n_params = sum(p.numel() for p in get_network("resnet18-bn", 3, 10, (32, 32)).parameters())
    assert n_params == 11_173_962  # the usual CIFAR ResNet-18 with a 10-way head
