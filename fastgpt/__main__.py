"""The ``fastgpt`` command, and ``python -m fastgpt``.

Light to import (the package's names load lazily), so that a Ctrl-C while the rest loads is held
(fastgpt.interrupts) and ends the command cleanly."""

import sys


def main() -> int:
    from .interrupts import interrupts_held

    try:
        with interrupts_held():
            from .cli import main as cli_main
    except KeyboardInterrupt:
        return 130
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
