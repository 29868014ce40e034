"""cj-runner: Comparative Judgement of student essays with an LLM as the judge."""

import os as _os
import sys as _sys

# The fits solve many small dense systems; BLAS threads only add contention there (a
# 200 x 200 Cholesky took 50 ms with OpenBLAS threads on a busy 2-core machine and
# 0.3 ms with one). Applies only when numpy is not loaded yet and the user set nothing.
if "numpy" not in _sys.modules:
    for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        _os.environ.setdefault(_name, "1")

__version__ = "0.1.0"

__all__ = ["__version__"]
