"""Exact nearest-neighbour search on a memory bank with faiss."""

from __future__ import annotations

import logging
import warnings

import faiss
import numpy as np

logger = logging.getLogger(__name__)
_GPU_FALLBACK_WARNED: list[bool] = []


class NearestNeighbourIndex:
    """Exact L2 nearest neighbours (faiss ``IndexFlatL2``), queried in chunks.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda"``. With the CPU build of faiss, ``"cuda"`` falls back
        to the CPU index with a warning.
    chunk_size : int
        Queries per faiss call, which bounds the (chunk_size, k) result buffers.
    """

    def __init__(self, device: str = "cpu", chunk_size: int = 65536):
        self.device = device
        self.chunk_size = chunk_size
        self.index_ = None

    def fit(self, memory_bank: np.ndarray) -> NearestNeighbourIndex:
        """Index the rows of ``memory_bank`` of shape (M, D)."""
        bank = np.ascontiguousarray(memory_bank, dtype=np.float32)
        index = faiss.IndexFlatL2(bank.shape[1])
        if self.device.startswith("cuda"):
            index = self._to_gpu(index)
        index.add(bank)
        self.index_ = index
        return self

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Return distances and indices of the ``k`` nearest memory-bank rows.

        Parameters
        ----------
        queries : ndarray of shape (Q, D)
        k : int

        Returns
        -------
        distances : ndarray of shape (Q, k), float32
            Euclidean (not squared) distances, ascending.
        indices : ndarray of shape (Q, k), int64
        """
        if self.index_ is None:
            msg = "NearestNeighbourIndex.search called before fit"
            raise RuntimeError(msg)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        distances = np.empty((len(queries), k), dtype=np.float32)
        indices = np.empty((len(queries), k), dtype=np.int64)
        for first in range(0, len(queries), self.chunk_size):
            last = first + self.chunk_size
            squared, found = self.index_.search(queries[first:last], k)
            distances[first:last] = np.sqrt(np.maximum(squared, 0.0))
            indices[first:last] = found
        return distances, indices

    @staticmethod
    def _to_gpu(index):
        if not hasattr(faiss, "StandardGpuResources"):
            # One warning per process: BAAF builds an index for every bag model.
            if not _GPU_FALLBACK_WARNED:
                _GPU_FALLBACK_WARNED.append(True)
                warnings.warn(
                    "faiss has no GPU support (faiss-cpu is installed); using the "
                    "CPU index. Install faiss-gpu for device=cuda.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return index
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
