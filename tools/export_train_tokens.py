"""Write the bundled model's training tokens for the tests' bigram baseline (dev-only, one-off).

The kjv-tiny test compares the model's validation perplexity with an add-one-smoothed bigram
model of the training tokens; the training text itself (4 MB) is not shipped, its token ids
are (uint16, compressed). Needs Debian's bible-kjv (see train_tiny.py) and the `tokenizers`
package through transformers.

    python tools/export_train_tokens.py --out tests/data/kjv-tiny-train-ids.npz
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_tiny import dump_bible, encode_stream, load_fast_tokenizer  # noqa: E402

MODEL = Path(__file__).parent.parent / "fastgpt" / "models" / "kjv-tiny"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data/kjv-tiny-train-ids.npz"))
    args = parser.parse_args()
    books = dump_bible()
    n_valid = math.ceil(0.05 * len(books))  # the same split as train_tiny.py
    tok = load_fast_tokenizer(MODEL)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    ids = encode_stream(tok, [t for _, t in books[:-n_valid]], eot)
    np.savez_compressed(args.out, ids=np.asarray(ids, np.uint16))
    print(f"{len(ids)} training tokens -> {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
