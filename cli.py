"""What every command-line script shares: user errors as one line and an exit code."""
import os
import sys
import tempfile


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


def writable_folder(folder, flag):
    """Create `folder` if needed and check that files can be written there (before hours of work)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"--{flag} {folder}: cannot write there ({error.strerror})")
