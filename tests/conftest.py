import os
import sys

import numpy as np
import pytest

# With --import-mode=importlib the tests folder is not on sys.path; the shared helpers live in
# tests/_helpers.py, so put the folder there once for every test module.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
