"""The PyTorch adapter: state_dict <-> named arrays keeps every dtype, and FedProx's term is exact."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from fedra.errors import SchemaMismatch  # noqa: E402
from fedra.frameworks import detect, get  # noqa: E402
from fedra.frameworks.torch import ProximalTerm, TensorData, from_arrays, to_arrays  # noqa: E402
from fedra.records import Message, decode_message, encode_message  # noqa: E402


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_state_dict_round_trip_preserves_names_dtypes_and_values() -> None:
    m = net()
    m.half()
    arrays = to_arrays(m)
    assert list(arrays) == list(m.state_dict())
    assert arrays["1.num_batches_tracked"].dtype == np.int64
    assert arrays["0.weight"].dtype == np.float16
    wire = decode_message(encode_message(Message(arrays=arrays))).arrays  # read-only views, as from a client
    other = net().half()
    from_arrays(other, wire)
    for k, t in other.state_dict().items():
        assert t.dtype == m.state_dict()[k].dtype
        assert torch.equal(t, m.state_dict()[k])


def test_loaded_arrays_are_copies_not_views_of_the_payload() -> None:
    m = net()
    arrays = {k: v.copy() for k, v in to_arrays(m).items()}
    from_arrays(m, arrays)
    arrays["3.bias"][:] = 42.0
    assert not torch.any(m.state_dict()["3.bias"] == 42.0)


def test_mismatches_raise_schema_errors() -> None:
    m = net()
    arrays = to_arrays(m)
    with pytest.raises(SchemaMismatch, match=r"missing \['3.bias'\]"):
        from_arrays(m, {k: v for k, v in arrays.items() if k != "3.bias"})
    with pytest.raises(SchemaMismatch, match=r"expected torch\.float32"):
        from_arrays(m, {**arrays, "3.bias": arrays["3.bias"].astype(np.float64)})
    with pytest.raises(SchemaMismatch, match=r"expected torch.float32\[3\]"):
        from_arrays(m, {**arrays, "3.bias": np.zeros(4, np.float32)})
    with pytest.raises(SchemaMismatch, match="bfloat16"):
        to_arrays(nn.Linear(2, 2).to(torch.bfloat16))


def test_proximal_term_value_and_gradient_match_fedprox() -> None:
    m = nn.Linear(3, 2)
    ref = [p.detach().clone() for p in m.parameters()]
    prox = ProximalTerm(m, mu=0.5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    value = prox(m)
    n = sum(p.numel() for p in m.parameters())
    assert value.item() == pytest.approx(0.5 / 2 * n)  # each coordinate moved by 1
    value.backward()
    for p, r in zip(m.parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, 0.5 * (p.detach() - r))  # d/dw mu/2||w-w_t||^2 = mu (w - w_t)
    assert ProximalTerm(m, mu=0.0)(m).item() == 0.0
    with pytest.raises(ValueError, match="expected >= 0"):
        ProximalTerm(m, mu=-1)


def test_tensor_data_batches_are_seeded_and_cover_the_partition() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.int64)
    data = TensorData(x, y)
    torch.manual_seed(1)
    a = [b[1].tolist() for b in data.batches(4)]
    torch.manual_seed(1)
    b = [b[1].tolist() for b in data.batches(4)]
    assert a == b and sorted(x for part in a for x in part) == list(range(10)) and [len(v) for v in a] == [4, 4, 2]
    assert [v[1].tolist() for v in data.batches(5, shuffle=False)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_framework_detection() -> None:
    assert detect(net()) == "torch"
    assert detect({"w": np.zeros(2)}) == "numpy"
    assert get("torch").name == "torch"
    from fedra.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot tell the framework"):
        detect([1, 2])
    with pytest.raises(ConfigError, match="expected one of torch, numpy"):
        get("jax")
