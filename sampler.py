"""Training data: every image under a folder, in an endless, reproducible shuffled order.

Sample k of the stream is image `order(epoch)[k mod n]` with `epoch = k div n`, where
`order(epoch)` is a permutation drawn from (seed, epoch). Being a pure function of k, the
stream never ends, reshuffles at every epoch, fills every batch (a batch that crosses an
epoch boundary takes the rest from the next permutation), does not depend on how many
workers decode it, and resumes exactly from any position.
"""
import ctypes
import multiprocessing
import os
import signal
import sys

import numpy as np
from jittor.dataset import Dataset

import transformer
from cli import UserError, existing_folder, one_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".heic", ".heif",
                    ".avif")
# Jittor gives each worker a shared-memory ring buffer of 512 MB by default (16 workers:
# 8 GB); a batch of eight 256 × 256 crops is 6 MB.
WORKER_BUFFER_BYTES = 64 * 1024 * 1024
MAX_SUBSTITUTES = 100  # unreadable images in a row before the loader gives up
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent exits


def find_images(folder):
    """Image files under `folder` at any depth, by extension, hidden files and folders left out. Links to folders
    are followed (a dataset assembled from links to shared ones), each folder read once: a link back up or a
    second link to one folder adds nothing."""
    existing_folder(folder, folder)
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        if os.path.realpath(root) in seen:
            dirs[:] = []
            continue
        seen.add(os.path.realpath(root))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise UserError(f"{folder}: holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def epoch_order(seed, epoch, n):
    return np.random.default_rng([seed, epoch]).permutation(n)


class InfiniteImageFolder(Dataset):
    """A Jittor dataset over the endless stream, from sample `start` on, `length` samples long.

    Jittor's workers (`num_workers`) decode in parallel; under MPI, Jittor splits each batch
    between the ranks, so a batch here is the global one.
    """

    def __init__(self, folder, batch_size, length, seed=0, start=0, n_threads=0, crop=transformer.TRAIN_CROP):
        super().__init__()
        self.paths = find_images(folder)
        self.seed, self.start, self.crop = seed, start, crop
        self._order = (None, None)  # (epoch, permutation): one permutation is kept at a time
        self.skipped = 0  # unreadable images met by this process (each worker counts its own)
        # A worker process cannot raise into the training loop (Jittor would report its death
        # as an interruption): it leaves its fatal error here, shared memory made before the
        # workers fork, for `raise_failure` to raise in the main process.
        self.failure = multiprocessing.Array("c", 1024)
        self.main_process = os.getpid()
        self.set_attrs(batch_size=batch_size, total_len=length, shuffle=False, drop_last=True,
                       num_workers=n_threads, buffer_size=WORKER_BUFFER_BYTES)

    def _worker_main(self, *args):
        """Where each of Jittor's data workers, a fork of the main process, starts: `set_up_worker` first."""
        set_up_worker(self.main_process)
        super()._worker_main(*args)

    def path_at(self, k):
        epoch, position = divmod(k, len(self.paths))
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.seed, epoch, len(self.paths)))
        return self.paths[self._order[1][position]]

    def load(self, k):
        """Sample k as a CHW float32 array; its random crop is drawn from (seed, k) too."""
        image = transformer.load_image(self.path_at(k), as_shown=False)
        return transformer.train_transform(image, np.random.default_rng([self.seed, k, 1]), self.crop)

    def __getitem__(self, index):
        """Sample start + index; an unreadable image is replaced by the next one in the stream.

        After MAX_SUBSTITUTES unreadable images in a row the failure is recorded and a
        black image returned: the training loop calls `raise_failure` before using a batch.
        """
        k = self.start + index
        for attempt in range(MAX_SUBSTITUTES):
            try:
                return self.load(k + attempt)
            except transformer.DAMAGED_PICTURE_ERRORS as error:
                self.skipped += 1
                print(f"warning: skipping unreadable image {self.path_at(k + attempt)} ({one_line(error)}); "
                      f"{self.skipped} skipped so far by this loader", file=sys.stderr, flush=True)
        self.failure.value = f"{MAX_SUBSTITUTES} unreadable images in a row near {self.path_at(k)}".encode()[:1023]
        return np.zeros((3, self.crop, self.crop), np.float32)


def set_up_worker(main_process):
    """A data worker's signals. The fork gave it the main process's Python handlers, which run only between Python
    bytecodes, and a worker that waits in Jittor's C++ for room in its buffer never gets there: the SIGTERM of
    Jittor's `terminate` at the end of a run left it waiting, and the run waited for it at its exit, forever. So
    SIGTERM gets its default action back; Ctrl-C and train.py's SIGUSR1, which a terminal and Slurm send to every
    process, are the main process's to act on; and the kernel ends the worker when the main process exits (on
    Ctrl-C or SIGTERM it leaves at once, without waiting for its workers)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # no glibc: Jittor's `terminate` remains what ends the workers
        return
    if os.getppid() != main_process:  # the main process ended before prctl took effect
        os._exit(0)


def raise_failure(*datasets):
    """A UserError if a dataset (or one of its worker processes) met too many unreadable images."""
    for dataset in datasets:
        if dataset.failure.value:
            raise UserError(dataset.failure.value.decode(errors="replace"))
