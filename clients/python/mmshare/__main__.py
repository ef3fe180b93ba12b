"""`python -m mmshare ...` runs the `mmshare` command (the CLI the wheel installs) with the
same arguments, as if it were typed in the shell."""

import os
import sys

from .daemon import find_program


def main() -> None:
    try:
        program = find_program("mmshare")
    except FileNotFoundError as e:
        print(f"mmshare: {e}", file=sys.stderr)
        sys.exit(127)
    os.execv(program, [program, *sys.argv[1:]])


if __name__ == "__main__":
    main()
