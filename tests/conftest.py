"""Shared test settings.

Every test runs torch on one thread: the tensors in these tests are tiny, and on a shared 2-core machine extra
threads only add contention (measured: a 0.5 s test took 7 s with 2 threads while another process ran).
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
