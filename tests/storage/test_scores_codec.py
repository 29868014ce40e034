"""The running batch's scores in its state: packed exactly, older lists still read."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cj_runner.storage.scores_codec import SCORES_KEY, pack_scores, unpack_scores

FINITE = st.floats(allow_nan=False, allow_infinity=False)


@given(arrays(np.float64, st.integers(0, 300), elements=FINITE))
def test_packed_scores_survive_json_bit_for_bit(scores: np.ndarray) -> None:
    stored = json.loads(json.dumps({SCORES_KEY: pack_scores(scores)}))
    back = unpack_scores(stored, scores.size)
    assert back is not None
    assert back.dtype == np.float64
    assert back.tobytes() == scores.astype("<f8").tobytes()
    assert back.flags.writeable


def test_states_written_before_the_packed_form_are_read() -> None:
    assert np.array_equal(unpack_scores({"scores": [0.5, -0.25, 1e-300]}, 3), [0.5, -0.25, 1e-300])


def test_the_packed_form_wins_over_a_list() -> None:
    extra = {SCORES_KEY: pack_scores(np.array([1.0, 2.0])), "scores": [3.0, 4.0]}
    assert np.array_equal(unpack_scores(extra, 2), [1.0, 2.0])


def test_missing_wrong_length_or_garbled_scores_are_none() -> None:
    assert unpack_scores({}, 3) is None
    assert unpack_scores({"scores": [1.0, 2.0]}, 3) is None
    assert unpack_scores({SCORES_KEY: pack_scores(np.zeros(2))}, 3) is None
    assert unpack_scores({SCORES_KEY: "not base64 !"}, 3) is None
    assert unpack_scores({SCORES_KEY: pack_scores(np.array([1.0, np.nan]))}, 2) is None
    assert unpack_scores({"scores": ["a", "b"]}, 2) is None
    assert unpack_scores({"scores": "12"}, 2) is None
