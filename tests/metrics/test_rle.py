import numpy as np
import pytest

from src.metrics.rle import EMPTY_RLE, rle_decode, rle_encode
from src.utils.errors import UserError


def test_known_encoding_is_row_major_and_one_indexed():
    mask = np.zeros((3, 4), np.uint8)
    mask[0, 0] = 1
    mask[1, 1:4] = 255
    mask[2, 0] = 1  # run continues across the row break: pixels 7 (1,3) and 8 (2,0)
    assert rle_encode(mask) == "1 1 6 4"


def test_empty_mask_is_one_zero():
    assert rle_encode(np.zeros((5, 6), bool)) == EMPTY_RLE == "1 0"
    assert not rle_decode("1 0", (5, 6)).any()


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 33)])
def test_round_trip_random(shape):
    rng = np.random.default_rng(sum(shape))
    for p in (0.0, 0.1, 0.5, 1.0):
        mask = (rng.random(shape) < p).astype(np.uint8)
        decoded = rle_decode(rle_encode(mask), shape)
        assert decoded.dtype == np.uint8 and decoded.shape == shape
        np.testing.assert_array_equal(decoded, mask)


def test_full_mask():
    assert rle_encode(np.ones((2, 3))) == "1 6"


@pytest.mark.parametrize(
    "rle, fragment",
    [
        ("1 2 3", "odd number"),
        ("a b", "integers"),
        ("0 3", ">= 1"),
        ("5 2 1 2", "out of order"),
        ("3 4 5 1", "overlap"),
        ("10 5", "past the end"),
    ],
)
def test_malformed_rle_names_the_input(rle, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        rle_decode(rle, (3, 4), name="kidney_5_0001")
    assert "kidney_5_0001" in str(err.value)
