"""What every command-line script shares: user errors as one line and exit 1 (a package missing at its start too),
interruption, and outputs that are either complete or absent."""
import argparse
import contextlib
import errno
import os
import secrets
import signal
import sys
import tempfile
import time
import traceback

# Errors of a full or limited disk: reported as one line, whatever was being written.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# How long a rank other than 0 of coupled ranks waits before it reports a user error: see `run`.
RANK_ERROR_DELAY_S = 5
# The signals that end a script at once, its unfinished outputs removed: Ctrl-C, SIGTERM (kill, Slurm, docker stop),
# and SIGUSR1, which Slurm sends before a time limit where asked (train.py takes it instead as a request to stop
# after a checkpoint).
INTERRUPTIONS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def _missing_module_as_one_line(kind, error, trace):
    """`sys.excepthook` from a script's first import on, until Jittor's import sets its own: a module missing there
    is one line, not a traceback. It is what `python test_video.py …` gives in a shell where the project's
    environment is not activated (after `make demo`): that Python has none of the packages."""
    if not issubclass(kind, ModuleNotFoundError):
        sys.__excepthook__(kind, error, trace)
        return
    print(f"error: this Python ({sys.executable}) has no module named '{error.name}', which the scripts need: run them "
          "with the environment that `make` makes, .venv/bin/python (or `source .venv/bin/activate` first)",
          file=sys.stderr)


sys.excepthook = _missing_module_as_one_line  # each script imports this module before any package


class UserError(Exception):
    """A mistake the user can fix (a missing file, a bad flag): shown as one line, no traceback."""


class HelpWithDefaults(argparse.HelpFormatter):
    """--help with each flag's default, where it has one and its help does not already say it: what a run does
    without the flag (--lr, --max_iter …) is the first thing a researcher looks up."""

    def _get_help_string(self, action):
        # `is`, not `in`: 0 == False, and --seed's default 0 is worth showing.
        if (not action.option_strings or any(action.default is none for none in (None, False, argparse.SUPPRESS))
                or "default" in action.help):
            return action.help
        return f"{action.help} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes are UserErrors: one `error:` line and exit 1, like every other user error; --help
    shows the defaults (`HelpWithDefaults`)."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpWithDefaults, **kwargs)

    def error(self, message):
        raise UserError(f"{message} (see --help)")


_unfinished = set()  # temporary files of `atomic_output` that an interruption must remove
_main_process = None  # the process that prints "interrupted"; its forked children exit quietly
_coupled = False  # whether this process is a rank of an mpirun job whose ranks fail together: see `run`


def _interrupt(signum, frame):
    """One of INTERRUPTIONS: remove unfinished outputs and exit at once.

    Unwinding the stack instead (KeyboardInterrupt) would wait for whatever the main thread
    was waiting on, Jittor's compiler processes or its data workers, and can hang.

    Under mpirun only rank 0 says so: mpirun passes Ctrl-C on to every rank, and it ends the
    other ranks with SIGTERM when one fails, after that rank's own error line.
    """
    if os.getpid() == _main_process:
        for path in list(_unfinished):
            _remove(path)
        if mpi_rank() == 0:
            print("\ninterrupted", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def one_write_a_line():
    """Make each line printed to stderr one write. Python writes stderr unbuffered: print's text and its newline
    go out in two writes, and the lines of the ranks of an mpirun job came out glued ("error: aerror: a").
    A stderr that is no file stream (a notebook's, where `import net` runs this through backend) stays as it is."""
    reconfigure = getattr(sys.stderr, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(write_through=False, line_buffering=True)


def run(main, argv=None, workers=False, coupled_ranks=False):
    """Call `main(argv)`; a UserError becomes one `error:` line and exit 1; Ctrl-C, SIGTERM
    (what `kill`, Slurm pre-emption and `docker stop` send) or SIGUSR1 (`INTERRUPTIONS`)
    "interrupted" and exit 128 + the signal (130, 143, 138), with unfinished outputs removed.

    Jittor installs a SIGINT handler that exits without that clean-up, and a SIGCHLD handler
    that ends the process with a message about memory whenever a child process is killed.
    The latter is kept only by scripts with data-loading `workers` (a worker killed for lack
    of memory would otherwise leave the run waiting for it forever).

    Under mpirun, the ranks of a script with `coupled_ranks` (train.py's, which meet in every
    step's gradient all-reduce) end the whole job when one of them fails: see `_exit`. A user
    error that they all meet (a bad flag, a missing file) is reported once: the ranks other than
    0 wait `RANK_ERROR_DELAY_S` before they report theirs, and mpirun, which ends the job when
    rank 0 fails, ends them meanwhile. An error of another rank alone comes that much later.
    Ranks that go on to work apart (test_video.py's, each on its own outputs) call
    `ranks_work_apart` first: from then on a rank that fails waits in Jittor's MPI_Finalize for
    the others to finish their work, and reports its own error.
    """
    global _main_process, _coupled
    _main_process = os.getpid()
    one_write_a_line()
    for interruption in INTERRUPTIONS:
        signal.signal(interruption, _interrupt)
    if not workers:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _coupled = coupled_ranks and "OMPI_COMM_WORLD_SIZE" in os.environ  # how Jittor knows it runs under mpirun
    try:
        main(argv)
    except UserError as error:
        if _coupled and mpi_rank() != 0:
            time.sleep(RANK_ERROR_DELAY_S)
        print(f"error: {error}", file=sys.stderr)
        _exit(1, at_once=_coupled)
    except Exception:
        if not _coupled:
            raise
        traceback.print_exc()
        _exit(1, at_once=True)


def ranks_work_apart():
    """From here on the ranks of `run(main, coupled_ranks=True)` work apart: an error of one rank ends no other."""
    global _coupled
    _coupled = False


def mpi_rank():
    """This process's rank in an mpirun job (OpenMPI's variable), 0 outside one."""
    return int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))


def _exit(code, at_once):
    """Exit with `code`; `at_once` (a rank of coupled ranks): without the clean-up of Python's exit.

    That clean-up runs Jittor's MPI_Finalize, which waits for every rank, while the other
    ranks wait for this one in their next all-reduce: forever (measured: a `--save_dir` that
    only rank 0 checks). A rank that ends without MPI_Finalize is one mpirun sees fail, and
    mpirun then ends every rank within seconds.
    """
    if not at_once:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def one_line(message):
    """A library's message on one line, to quote it in ours: it may hold line breaks."""
    return " ".join(str(message).split())


def regular_file(path, flag=None):
    """Check that `path` is a file that can be read (not missing, not a folder, FIFO or device)."""
    name = f"{flag} {path}" if flag else path
    if not os.path.exists(path):
        raise UserError(f"{name}: no such file")
    if not os.path.isfile(path):
        raise UserError(f"{name}: not a regular file (a folder, device or pipe)")
    return path


def existing_folder(path, name):
    """Check that `path` is a folder; `name` (a flag and the path) starts the error line."""
    if not os.path.isdir(path):
        raise UserError(f"{name}: {'not a folder' if os.path.exists(path) else 'no such folder'}")
    return path


def writable_folder(folder, flag):
    """Create `folder` if needed and check that files can be written there (before hours of work)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--{flag} {folder}: a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"--{flag} {folder}: cannot write there ({error.strerror})")


@contextlib.contextmanager
def atomic_output(path):
    """A binary file object (read and write) that becomes `path` only when the `with` block completes.

    It is a new hidden file beside `path`, created exclusively (O_EXCL: a file or link
    planted under that name makes it fail, never redirects it), with the permissions the
    umask gives. A failure or an interruption leaves `path` as it was and removes the
    temporary; a full disk is a UserError.
    """
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder, not a file name")
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".tmp-{secrets.token_hex(8)}-{name}")
    _unfinished.add(temporary)
    try:
        file = open(temporary, "xb+")
    except OSError as error:
        _unfinished.discard(temporary)
        raise UserError(f"{path}: cannot write there ({error.strerror})")
    try:
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        if error.errno in DISK_FULL:
            raise UserError(f"{path}: cannot write it ({os.strerror(error.errno)}); nothing was written")
        raise
    except BaseException:
        _remove(temporary)
        raise
    finally:
        _unfinished.discard(temporary)


def write_atomically(path, data):
    """Write `data` (bytes) to `path` through `atomic_output`."""
    with atomic_output(path) as file:
        file.write(data)


def _remove(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
