"""`python -m fastgpt`: the same as the `fastgpt` command."""

import sys

from .cli import main

sys.exit(main())
