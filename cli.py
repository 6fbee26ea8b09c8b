"""What every command-line script shares: user errors as one line and an exit code."""
import sys


class UserError(Exception):
    """A mistake the user can fix (a missing file, a bad flag): shown as one line, no traceback."""


def run(main):
    """Call `main()`; turn a UserError or Ctrl-C into one line on stderr and a non-zero exit."""
    try:
        main()
    except UserError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
