"""The training step's finiteness check: one reduction per tensor, same answer as isfinite."""

import pytest
import torch

from marinelife.fit.epoch import _all_finite

BIG = torch.finfo(torch.float32).max


@pytest.mark.parametrize(
    "bad",
    [float("inf"), float("-inf"), float("nan")],
)
def test_one_bad_element_anywhere_is_found(bad):
    tensors = [torch.randn(50, 20), torch.randn(1000)]
    tensors[1][417] = bad
    assert not _all_finite(tensors)


def test_opposite_infinities_do_not_cancel():
    t = torch.zeros(10)
    t[2], t[7] = float("inf"), float("-inf")
    assert not _all_finite([t])


def test_huge_finite_values_do_not_overflow_into_a_false_alarm():
    # float32 sums of these would be inf; the check accumulates in float64.
    assert _all_finite([torch.full((100_000,), BIG), torch.full((3,), -BIG)])


def test_missing_gradients_and_other_dtypes():
    assert _all_finite([None, torch.ones(3, dtype=torch.bfloat16), None])
    assert _all_finite([])
    assert not _all_finite([None, torch.tensor([1.0, float("nan")], dtype=torch.float16)])


def test_loader_drops_only_a_last_batch_of_one():
    from torch.utils.data import DataLoader

    from marinelife.fit.stage_data import drop_last_batch

    steps = {n: len(DataLoader(range(n), batch_size=32, drop_last=drop_last_batch(n, 32)))
             for n in (100, 97, 5)}  # fmt: skip
    assert steps == {100: 4, 97: 3, 5: 1}  # 97 = 3 x 32 + 1: the lone last image is dropped
