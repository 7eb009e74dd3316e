"""Peak memory of coreset selection and out-of-bag scoring stays O(N * d)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Runs in a fresh interpreter so that ru_maxrss covers only this workload.
SCRIPT = """
import json, resource
import numpy as np
from detectors.coreset import greedy_coreset_indices
from detectors.knn import NearestNeighbourIndex

embeddings = np.random.default_rng(0).standard_normal((150_000, 1024), np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
picks = greedy_coreset_indices(embeddings, 0.001)
index = NearestNeighbourIndex().fit(embeddings[picks])
index.largest_per_group(embeddings[:100_000].reshape(100, 1000, 1024))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mib": (after - before) / 1024}))
"""


@pytest.mark.slow
def test_coreset_and_scoring_memory_linear():
    output = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    )
    growth = json.loads(output.stdout.splitlines()[-1])["growth_mib"]
    input_mib = 150_000 * 1024 * 4 / 2**20  # 586 MiB
    # An N x N distance matrix would need 84 GiB; the selection and scoring
    # buffers must stay below one more copy of the input.
    assert growth < input_mib
