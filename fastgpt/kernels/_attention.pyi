import numpy as np

def attention(qkv: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, rows: np.ndarray, start: np.ndarray,
              slots: np.ndarray, out: np.ndarray, scratch: np.ndarray, n_threads: int = 1) -> np.ndarray: ...
