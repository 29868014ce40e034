"""Rule 3a (grade probabilities with the boundaries' uncertainty) reads a diagonal
covariance from the variances, without an n x n matrix (large batches have no covariance)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_runner.core.models import GradeScale
from cj_runner.core.projection import (
    joint_grade_probabilities,
    project_grades,
)

FOUR = GradeScale(name="four", grades=("D", "C", "B", "A"))


@given(
    st.integers(0, 2**32 - 1),
    st.integers(2, 6),
    st.integers(1, 8),
    st.integers(2, 5),
)
@settings(max_examples=40, deadline=None)
def test_variances_give_the_probabilities_of_the_dense_diagonal_matrix(
    seed: int, n_anchors: int, n_students: int, n_grades: int
) -> None:
    rng = np.random.default_rng(seed)
    n = n_anchors + n_students
    mean = rng.normal(0.0, 1.5, n)
    variances = rng.uniform(0.0, 1.0, n)
    anchors = rng.permutation(n)[:n_anchors].tolist()
    students = [i for i in range(n) if i not in anchors]
    grades = rng.integers(0, n_grades, n_anchors)
    priors = rng.uniform(0.1, 1.0, n_grades)
    args = (anchors, grades, students, n_grades, priors)
    dense = joint_grade_probabilities(
        mean, np.diag(variances), *args, np.random.default_rng(seed), 60
    )
    vector = joint_grade_probabilities(mean, variances, *args, np.random.default_rng(seed), 60)
    if dense is None:  # every draw's isotonic fit came out flat
        assert vector is None
        return
    assert vector is not None
    np.testing.assert_allclose(vector, dense, rtol=0, atol=1e-12)
    assert np.allclose(vector.sum(axis=1), 1.0) and np.all(vector >= 0)


def test_project_grades_takes_the_variances_as_a_diagonal_covariance() -> None:
    scores = np.array([0.4, -0.2, -1.0, 0.0, 1.0, 1.6])
    se = np.array([0.3, 0.5, 0.5, 0.4, 0.5, 0.6])
    args = (scores, se, [2, 3, 4, 5], ["D", "C", "B", "A"], [0, 1], FOUR)
    dense = project_grades(*args, covariance=np.diag(se**2), seed=3)
    vector = project_grades(*args, covariance=se**2, seed=3)
    assert dense == vector
