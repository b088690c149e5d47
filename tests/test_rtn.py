import pytest
import torch

from qid.quantize.rtn import quantize_tensor


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [16, 64, -1])
def test_rtn_error_is_at_most_half_a_step(bits, group_size):
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(bits)) * 0.05
    dq = quantize_tensor(w, bits, group_size)
    g = 64 if group_size == -1 else group_size
    groups = w.reshape(32, 64 // g, g)
    step = (groups.amax(-1, keepdim=True) - groups.amin(-1, keepdim=True)) / (2**bits - 1)
    err = (dq - w).abs().reshape(32, 64 // g, g)
    assert torch.all(err <= step / 2 * (1 + 1e-5) + 1e-8)
    # and each group uses at most 2^bits distinct values
    levels = [torch.unique(row).numel() for row in dq.reshape(-1, g)]
    assert max(levels) <= 2**bits


def test_rtn_keeps_grid_points_and_constant_groups():
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    assert torch.allclose(quantize_tensor(w, 2, 4), w)


def test_rtn_ends_a_width_the_group_size_does_not_divide_with_a_shorter_group():
    w = torch.randn(8, 40, generator=torch.Generator().manual_seed(0))
    dq = quantize_tensor(w, 2, 16)  # groups: columns 0-15, 16-31, 32-39
    for lo, hi in ((0, 16), (16, 32), (32, 40)):
        assert torch.allclose(dq[:, lo:hi], quantize_tensor(w[:, lo:hi], 2, -1))
    assert max(torch.unique(row).numel() for row in dq[:, 32:]) <= 4


@pytest.mark.parametrize("group_size", [0, -2])
def test_rtn_rejects_an_invalid_group_size(group_size):
    with pytest.raises(ValueError, match=f"group_size {group_size}"):
        quantize_tensor(torch.zeros(2, 64), 4, group_size)
