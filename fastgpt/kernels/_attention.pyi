import numpy as np

def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, start: np.ndarray, pos: int,
              out: np.ndarray, scratch: np.ndarray, n_threads: int = 1) -> np.ndarray: ...
