import numpy as np

class Decoder:
    n_threads: int
    n_rows: int
    n_items: int
    n_slots: int
    logits: np.ndarray
    def __init__(self, weights: object, config: object, k_cache: np.ndarray, v_cache: np.ndarray,
                 start: np.ndarray, workspace: object, n_threads: int, max_level: int = 3) -> None: ...
    def step(self, rows: np.ndarray, slots: np.ndarray, logit_items: np.ndarray | None = None) -> np.ndarray: ...
