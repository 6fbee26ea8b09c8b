"""Train MCCNet's decoder and MCC module (the VGG encoder stays frozen).

    python train.py --content_dir data/train2014 --style_dir data/wikiart --batch_size 8

Losses, weights, optimizer and learning-rate decay are the original's (docs/mccnet.md).

Checkpoints, in --save_dir (default models/, apart from the published weights in
experiments/), one set per --save_model_interval and at the end:
- `decoder_iter_N.pkl`, `mcc_module_iter_N.pkl`: the networks' state dicts, which
  test_video.py loads as they are (with --save_pth also as `.pth` for the PyTorch original);
- `state_iter_N.pkl`: Adam's moments (`m.i`, `v.i`, in parameter order), its step count
  `n_step`, the `iteration` and the position in the image streams (`samples`).
Every file is written atomically and the state file last, so a run killed at any moment
leaves the previous checkpoint whole; --resume takes the newest intact one (--resume auto: or
none, starting afresh, where there is none). A run without --resume refuses a --save_dir that
holds checkpoints: it would overwrite them. Logs, in --log_dir: losses.csv, TensorBoard events
and sample grids; a fresh run moves another run's logs there into a folder of their own.

Under `mpirun -np N` each rank trains on its own --batch_size images of every global batch
and Jittor averages the gradients: an update equals one process's with a batch of
N × --batch_size, and so do the losses logged. Rank 0 alone writes checkpoints and logs. A run
may resume with another number of ranks: the streams continue where they stopped, with the
new global batch. Every rank reads the checkpoint from --save_dir, which must be the same
folder for all (shared among the nodes of a cluster).

A run whose loss or weights become infinite or NaN (a learning rate too high) stops at that
iteration with one line naming the last checkpoint, before it writes checkpoints that --resume
would take.

SIGUSR1 (`kill -USR1`; from Slurm before a time limit, docs/gpu.md; mpirun passes it on to
every rank) stops a run after a checkpoint at the end of its current iteration, with one line
and exit status 138; SIGTERM and Ctrl-C end it at once (143, 130), keeping the checkpoints
written before.
"""
import contextlib
import csv
import glob
import io
import math
import os
import re
import signal
import socket
import sys
import time

# cli first, before any package: a package missing there is one line (`cli._missing_module_as_one_line`).
from cli import ArgumentParser, UserError, run, write_atomically, writable_folder

import numpy as np
from tqdm import tqdm

import backend
import download_weights
import jittor as jt
import net
import sampler
import transformer
import weights

with backend.pytorch_hidden():  # tensorboardX's package imports PyTorch where it is installed: see pytorch_hidden
    from tensorboardX import summary
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import RecordWriter

STATE_PATTERN = re.compile(r"state_iter_(\d+)\.pkl$")
LOSS_NAMES = tuple(net.LOSS_WEIGHTS)
SQUARES = "sum of squared parameters"
# The signal that asks a run to write a checkpoint at the end of its iteration and stop (`kill -USR1`; Slurm's
# `--signal` before a time limit; mpirun passes it on to every rank); SIGTERM and Ctrl-C end it at once.
STOP_SIGNAL = signal.SIGUSR1
STOP = "stop asked"  # the share of ranks that were asked to stop by this iteration
START_AFRESH = "to start afresh, give another --save_dir or remove them"
# The memory of a training step on the CPU, from its peak resident size at batch 1-8 and crops 128-512 on 2 cores
# (AVX-512 and AVX2 alike, within 2%; docs/history.md, 2026-12-07): 0.58 GB and 19.7 kB per pixel of a rank's
# batch. Taken low, as what a step needs at least (the points lie up to 0.3 GB below the line): 8 × 256² takes
# 10.9 GB.
STEP_BYTES, STEP_BYTES_PER_PIXEL = 0.3e9, 19e3
# The memory that each data worker adds, at least: a run at 8 × 256² (640×480 JPEGs) peaked in its control group at
# 0.61 GB more with 2 workers than with none, 2.05 GB more with 16 (docs/history.md, 2026-12-07).
DATA_WORKER_BYTES = 0.1e9
MOST_DATA_WORKERS = 16  # the original's --n_threads, the default's upper bound (`data_workers_by_default`)


def data_workers_by_default():
    """The CPUs this process may use (under mpirun, its rank's share: `backend.share_the_cpus_among_the_ranks`), at
    most the original's 16. More workers than CPUs decode no faster, and each takes 0.1 GB or more: on 2
    cores the original's 16 per loader took 2.9 GB more than 2 did, and 10 s more to start, for the same step time
    (docs/history.md, 2026-12-07)."""
    return min(MOST_DATA_WORKERS, len(os.sched_getaffinity(0)))


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--content_dir", required=True, help="folder of content images (e.g. MS-COCO train2014)")
    parser.add_argument("--style_dir", required=True,
                        help="folder of style images (e.g. WikiArt), flat or in sub-folders")
    parser.add_argument("--vgg", "--vgg_path", default=download_weights.DEFAULT_PATHS[0],
                        help="encoder weights, .pth or .pkl")
    parser.add_argument("--save_dir", default="models",
                        help="where checkpoints go (kept apart from experiments/, the published weights)")
    parser.add_argument("--log_dir", default="logs", help="TensorBoard events, losses.csv and sample grids")
    parser.add_argument("--lr", type=float, default=1e-4, help="initial learning rate")
    parser.add_argument("--lr_decay", type=float, default=5e-5, help="lr at iteration i is lr / (1 + lr_decay · i)")
    parser.add_argument("--max_iter", type=int, default=160000, help="iterations in all")
    parser.add_argument("--batch_size", type=int, default=8, help="images per iteration (per rank under MPI)")
    parser.add_argument("--crop_size", type=int, default=transformer.TRAIN_CROP,
                        help="training crop size, a multiple of 8 from 32; images are first resized to twice this, "
                             "square (the original: 256 from 512)")
    parser.add_argument("--style_weight", type=float, default=net.LOSS_WEIGHTS["style"],
                        help="weight of the style loss")
    parser.add_argument("--content_weight", type=float, default=net.LOSS_WEIGHTS["content"],
                        help="weight of the content loss")
    parser.add_argument("--n_threads", type=int, default=data_workers_by_default(),
                        help="image-decoding worker processes per loader (content, style); 0 decodes in the main "
                             f"process; default: the CPUs this process may use, at most {MOST_DATA_WORKERS}")
    parser.add_argument("--save_model_interval", type=int, default=10000, help="iterations between checkpoints")
    parser.add_argument("--log_interval", type=int, default=10, help="iterations between TensorBoard scalars")
    parser.add_argument("--sample_interval", type=int, default=1000,
                        help="iterations between sample grids (content | style | stylized)")
    parser.add_argument("--seed", type=int, default=0, help="seeds data order, crops and noise: runs are reproducible")
    parser.add_argument("--resume", nargs="?", const="latest",
                        help="continue from the newest intact checkpoint in --save_dir, or from the "
                             "given state_iter_N.pkl; an error if there is none. --resume auto: start "
                             "afresh where --save_dir holds none (a job script that a cluster may requeue)")
    parser.add_argument("--save_pth", action="store_true", help="also write PyTorch .pth checkpoints")
    backend.add_device_argument(parser)
    return parser.parse_args(argv)


def check_args(args):
    if args.crop_size < 32:
        raise UserError(f"--crop_size {args.crop_size}: must be at least 32 (the losses reach relu5_1)")
    if args.crop_size % 8:
        raise UserError(f"--crop_size {args.crop_size}: must be a multiple of 8, as the decoder's output is (it "
                        f"would be {-(-args.crop_size // 8) * 8}, and the losses compare it with the crop)")
    for flag in ("max_iter", "batch_size", "save_model_interval", "log_interval", "sample_interval"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be at least 1")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr {args.lr}: must be a positive number")
    for flag in ("lr_decay", "style_weight", "content_weight", "n_threads"):
        if not (math.isfinite(getattr(args, flag)) and getattr(args, flag) >= 0):
            raise UserError(f"--{flag} {getattr(args, flag)}: must be a number, not negative")


def check_that_a_step_fits_in_memory(batch_size, crop_size, n_threads):
    """On the CPU, a step larger than the memory this process may use (a --crop_size of 2560 typed for 256) left
    the machine short of memory for a minute before the kernel killed the run without a word: one line instead,
    before. The data workers, `n_threads` for each image stream, count too: a fork's own memory is the process's
    in a container's or a Slurm job's limit. On a GPU, Jittor's error when its memory is short becomes one line
    (`main`)."""
    workers = 2 * n_threads
    needed = STEP_BYTES + STEP_BYTES_PER_PIXEL * batch_size * crop_size ** 2 + DATA_WORKER_BYTES * workers
    available, in_words = backend.memory_of_this_process()
    if needed > available:
        of_workers = f" ({DATA_WORKER_BYTES * workers / 1e9:.1f} GB for its {workers} data workers)" if workers else ""
        raise UserError(f"--batch_size {batch_size} --crop_size {crop_size} --n_threads {n_threads}: a training step "
                        f"on the CPU takes at least {needed / 1e9:.1f} GB of memory{of_workers}, and this process "
                        f"may use {in_words}: lower them (the original's 8 x 256² takes about 11 GB, and each data "
                        "worker 0.1 GB or more)")


# ---------------------------------------------------------------- one iteration

def learning_rate(lr, lr_decay, iteration):
    """The original's decay, applied before every iteration."""
    return lr / (1.0 + lr_decay * iteration)


def noise_for(seed, iteration, first_sample, shape):
    """c' − c for this rank's share of a batch: σ ~ U(0.01, 0.02) once per (global) batch,
    then N(0, σ²) for each image, drawn from its position in the stream: the same noise
    whatever the number of ranks, and again when a run resumes."""
    sigma = np.random.default_rng([seed, iteration, 2]).uniform(*net.NOISE_SIGMA_RANGE)
    samples = [np.random.default_rng([seed, first_sample + i, 3]).standard_normal(shape[1:]) for i in range(shape[0])]
    return (np.stack(samples) * sigma).astype(np.float32)


def train_step(network, optimizer, content, style, noise, content_weight, style_weight, stop_asked=False):
    """One optimisation step; returns the loss terms and weighted total of the global batch as floats, the sum
    of the squared parameters after the step (`SQUARES`), and the share of ranks asked to stop (`STOP`).

    The TV loss is a sum over the batch (the others are means): under MPI, where the
    gradients are averaged over ranks, it is weighted by the number of ranks so that an
    update equals one process's with the whole global batch. The values returned are
    averaged over ranks, so that they too are one process's with the global batch, and every
    rank sees the same (and stops together if they are not finite). Every rank finishes the
    step (its share of the gradient all-reduce included) before returning, so that rank 0
    may then read parameters for checkpoints and samples without waiting on a collective
    that the other ranks will never join.
    """
    losses = network(content, style, jt.array(noise))
    losses["tv"] = losses["tv"] * jt.world_size
    total = net.total_loss(losses, content_weight, style_weight)
    optimizer.step(total)
    # The whole step in one execution, then the values: with the values gathered and fetched first, the first
    # step of a process rounded otherwise than later ones did, and a resumed run drifted from an uninterrupted one.
    jt.sync_all()
    # inf or NaN as soon as one parameter is. A NaN weight need not reach the loss: Jittor's own ReLU (the GPU's)
    # turns NaN into 0, and a layer of NaN weights behind it then trained on silently, into the checkpoints.
    squares = net.total([(param * param).sum() for param in optimizer.param_groups[0]["params"]])
    stop = jt.array([float(stop_asked)]).cast(total.dtype)
    values = jt.concat([value.reshape((1,)) for value in [*losses.values(), total, squares, stop]])
    if jt.in_mpi:
        values = values.mpi_all_reduce("mean")
    return dict(zip([*losses, "total", SQUARES, STOP], values.numpy().tolist()))


def check_finite(values, iteration, save_dir):
    """Stop a diverged run (a loss term or a parameter inf or NaN) before it writes checkpoints that --resume
    would take."""
    bad = [f"{name} {value}" for name, value in values.items() if not math.isfinite(value)]
    if bad:
        earlier = complete_checkpoints(save_dir)
        restart = f"--resume {earlier[0]}" if earlier else "a fresh start"
        raise UserError(f"iteration {iteration}: training diverged ({', '.join(bad)}); no checkpoint was written "
                        f"for it; try {restart} with a lower --lr")


# ---------------------------------------------------------------- checkpoints

def checkpoint_paths(folder, iteration):
    return {name: os.path.join(folder, f"{name}_iter_{iteration}.pkl") for name in ("decoder", "mcc_module", "state")}


def optimizer_state(optimizer, iteration, samples):
    group = optimizer.param_groups[0]
    state = {"iteration": np.array(iteration), "n_step": np.array(optimizer.n_step), "samples": np.array(samples)}
    for i, (m, v) in enumerate(zip(group["m"], group["values"])):
        state[f"m.{i}"], state[f"v.{i}"] = m.numpy(), v.numpy()
    return state


def save_checkpoint(folder, iteration, samples, decoder, mcc_module, optimizer, save_pth):
    paths = checkpoint_paths(folder, iteration)
    weights.save_weights(decoder, paths["decoder"])
    weights.save_weights(mcc_module, paths["mcc_module"])
    if save_pth:
        weights.save_weights(decoder, paths["decoder"][:-4] + ".pth")
        weights.save_weights(mcc_module, paths["mcc_module"][:-4] + ".pth")
    weights.write_state_dict(optimizer_state(optimizer, iteration, samples), paths["state"])  # last: marks it complete


def complete_checkpoints(folder):
    """State files of the checkpoints in `folder` whose three files are all there, newest first."""
    found = []
    for path in glob.glob(os.path.join(folder, "state_iter_*.pkl")):
        iteration = int(STATE_PATTERN.search(path).group(1))
        if all(os.path.isfile(p) for p in checkpoint_paths(folder, iteration).values()):
            found.append((iteration, path))
    return [path for _, path in sorted(found, reverse=True)]


def read_checkpoint(state_path, decoder, mcc_module, optimizer):
    """The three files of a checkpoint, read and checked (UserError if any is damaged); nothing applied yet."""
    match = STATE_PATTERN.search(state_path)
    if not match or not os.path.isfile(state_path):
        raise UserError(f"--resume {state_path}: not a state_iter_N.pkl file")
    paths = checkpoint_paths(os.path.dirname(state_path), int(match.group(1)))
    group = optimizer.param_groups[0]
    expected = {"iteration": (), "n_step": (), "samples": ()}
    for i, (m, v) in enumerate(zip(group["m"], group["values"])):
        expected[f"m.{i}"], expected[f"v.{i}"] = tuple(m.shape), tuple(v.shape)
    return (weights.read_state_dict(paths["decoder"], _shapes(decoder), "the decoder"),
            weights.read_state_dict(paths["mcc_module"], _shapes(mcc_module), "the MCC module"),
            weights.read_state_dict(state_path, expected, "this training's optimizer"))


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def resume(choice, folder, decoder, mcc_module, optimizer):
    """Load the checkpoint `choice` ('latest': the newest intact one in `folder`; 'auto': the same, or none where
    `folder` holds none); returns (iteration, samples)."""
    newest = choice in ("latest", "auto")
    candidates = complete_checkpoints(folder) if newest else [choice]
    if not candidates and choice == "auto":
        check_same_checkpoint_on_every_rank(0, 0)
        if jt.rank == 0:
            print(f"--resume auto: no checkpoint in {folder}, starting afresh", file=sys.stderr)
        return 0, 0
    if not candidates:
        raise UserError(f"--resume: no complete checkpoint in {folder}; run without --resume to start fresh")
    for state_path in candidates:
        try:
            decoder_state, mcc_state, state = read_checkpoint(state_path, decoder, mcc_module, optimizer)
            break
        except UserError as error:
            if not newest:
                raise
            if jt.rank == 0:
                print(f"warning: skipping a damaged checkpoint: {error}", file=sys.stderr)
    else:
        raise UserError(f"--resume: every checkpoint in {folder} is damaged; {START_AFRESH}")
    decoder.load_parameters(decoder_state)
    mcc_module.load_parameters(mcc_state)
    group = optimizer.param_groups[0]
    for i, (m, v) in enumerate(zip(group["m"], group["values"])):
        m.update(jt.array(state[f"m.{i}"]))
        v.update(jt.array(state[f"v.{i}"]))
    optimizer.n_step = int(state["n_step"])
    iteration, samples = int(state["iteration"]), int(state["samples"])
    check_same_checkpoint_on_every_rank(iteration, samples)
    if jt.rank == 0:
        print(f"resuming from {state_path}", file=sys.stderr)
    return iteration, samples


def check_same_checkpoint_on_every_rank(iteration, samples):
    """Under MPI every rank reads --save_dir itself. Ranks that found different checkpoints (a folder on each
    node's own disk, where only rank 0's gets new ones) would start from different weights, and the rank with
    more iterations to run would wait at its end for the others, forever. Rank 0 ends the job instead, with one
    line; the other ranks wait for that end."""
    if not jt.in_mpi:
        return
    # Each rank's row, summed over the ranks: every rank gets all rows. float64, which Jittor's MPI passes exactly
    # (its int64 is sent as another MPI type).
    found = np.zeros((jt.world_size, 2))
    found[jt.rank] = iteration, samples
    found = jt.array(found).mpi_all_reduce("add").numpy().astype(int)
    if (found == found[0]).all():
        return
    if jt.rank != 0:
        while True:
            time.sleep(60)  # until mpirun ends this rank, as it does all ranks when rank 0 fails
    others = [f"rank {r} at iteration {i} ({s} samples)" for r, (i, s) in enumerate(found) if (i, s) != tuple(found[0])]
    raise UserError(f"--resume: rank 0 found a checkpoint at iteration {found[0, 0]} ({found[0, 1]} samples), "
                    f"{', '.join(others)}: every rank must read the same --save_dir (a folder that all nodes share)")


def refuse_earlier_checkpoints(folder):
    """A run without --resume whose --save_dir holds another run's checkpoints has most likely forgotten --resume:
    started, it would begin losses.csv anew and overwrite those checkpoints one by one as it reached their
    iterations."""
    earlier = complete_checkpoints(folder)
    if earlier:
        raise UserError(f"--save_dir {folder} holds the checkpoints of an earlier run, the newest {earlier[0]}: "
                        f"--resume continues it; {START_AFRESH}")


def remove_stale_temporaries(folder):
    """Unfinished checkpoint files that a killed run left behind (complete ones are never temporaries)."""
    for path in glob.glob(os.path.join(folder, ".tmp-*_iter_*.p*")):
        print(f"removing {path}, left unfinished by an earlier run", file=sys.stderr)
        os.unlink(path)


# ---------------------------------------------------------------- logs

class TrainingLog:
    """losses.csv (every iteration), TensorBoard scalars and images, and PNG sample grids.

    TensorBoard's events are written here, in the training's thread, as tensorboardX's records
    (SummaryWriter writes them from a thread of its own: on a full disk that thread died with a
    traceback and the run went on, or waited forever once its queue was full; its EventsWriter,
    when its last flush fails, leaves the file open). A log that cannot be written (a full disk)
    ends the run with one line, as a checkpoint does.
    """

    HEADER = ("iteration", "lr") + LOSS_NAMES + ("total",)

    def __init__(self, folder, start):
        """A fresh run starts a new losses.csv (`move_an_earlier_run_aside`); a resumed one keeps the rows up to its
        checkpoint."""
        self.folder = folder
        path = os.path.join(folder, "losses.csv")
        if start == 0:
            with self.reporting_write_errors():
                self.move_an_earlier_run_aside()
        kept = io.StringIO()
        csv.writer(kept).writerow(self.HEADER)
        if start > 0 and os.path.isfile(path):
            with open(path, newline="") as f:
                csv.writer(kept).writerows(row for row in list(csv.reader(f))[1:] if row and int(row[0]) <= start)
        write_atomically(path, kept.getvalue().encode())
        with self.reporting_write_errors():
            self.csv_file = open(path, "a", newline="")
            self.csv = csv.writer(self.csv_file)
            self.events = RecordWriter(os.path.join(folder, f"events.out.tfevents.{int(time.time())}."
                                                            f"{socket.gethostname()}"))
            self.write_event(Event(wall_time=time.time(), file_version="brain.Event:2"))  # what readers expect first

    def move_an_earlier_run_aside(self):
        """Where another run logged iterations here, move its logs (losses.csv, sample grids, TensorBoard events) into
        a folder of their own, named by the time of its last row: this run would overwrite them, or in TensorBoard
        mix its curves with them (TensorBoard shows each folder as a run)."""
        losses = os.path.join(self.folder, "losses.csv")
        if not os.path.isfile(losses):
            return
        with open(losses) as f:
            if not f.readline() or not f.readline():  # a header at most: nothing logged
                return
        last_row = time.strftime("%Y%m%d-%H%M%S", time.localtime(os.path.getmtime(losses)))
        aside = os.path.join(self.folder, f"earlier_{last_row}")
        os.makedirs(aside, exist_ok=True)
        for pattern in ("losses.csv", "sample_iter_*.png", "events.out.tfevents.*"):
            for path in glob.glob(os.path.join(glob.escape(self.folder), pattern)):
                os.replace(path, os.path.join(aside, os.path.basename(path)))
        print(f"--log_dir {self.folder} held the logs of an earlier run: moved to {aside}", file=sys.stderr)

    @contextlib.contextmanager
    def reporting_write_errors(self):
        try:
            yield
        except OSError as error:
            raise UserError(f"--log_dir {self.folder}: cannot write the logs there ({error.strerror})") from None

    def write_event(self, event):
        self.events.write(event.SerializeToString())

    def add_to_tensorboard(self, iteration, summary_proto):
        self.write_event(Event(wall_time=time.time(), step=iteration, summary=summary_proto))

    def losses(self, iteration, lr, values, to_tensorboard):
        with self.reporting_write_errors():
            self.csv.writerow([iteration, f"{lr:.6g}"] + [f"{values[n]:.6g}" for n in LOSS_NAMES + ("total",)])
            if to_tensorboard:
                self.add_to_tensorboard(iteration, summary.scalar("loss_content", values["content"]))
                self.add_to_tensorboard(iteration, summary.scalar("loss_style", values["style"]))
                self.add_to_tensorboard(iteration, summary.scalar("total_loss", values["total"]))
                self.csv_file.flush()
                self.events.flush()

    def samples(self, iteration, content, style, stylized):
        """A grid with one row per image of the batch (at most 4): content | style | stylized."""
        rows = [np.concatenate([transformer.array_to_image(a[i]) for a in (content, style, stylized)], axis=1)
                for i in range(min(4, len(content)))]
        write_atomically(os.path.join(self.folder, f"sample_iter_{iteration}.png"),
                         transformer.image_bytes(np.concatenate(rows, axis=0), ".png"))
        with self.reporting_write_errors():
            for name, batch in (("content", content), ("style", style), ("Ics", stylized)):
                self.add_to_tensorboard(iteration, summary.image(name, np.clip(batch[0], 0, 1)))
            self.events.flush()

    def close(self):
        """Close both files; a failed flush is reported, the files closed all the same (a file's close does)."""
        with self.reporting_write_errors():
            try:
                self.csv_file.close()
            finally:
                self.events.close()


# ---------------------------------------------------------------- main

def build(vgg_path, lr, seed=0):
    """The training network and Adam; the decoder's and MCC module's initial weights drawn from `seed`
    (the same on every rank, and in every run with that seed)."""
    jt.set_global_seed(seed, different_seed_for_mpi=False)
    vgg, decoder, mcc_module = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    weights.load_weights(vgg, vgg_path, "the VGG encoder")
    network = net.Net(vgg, decoder, mcc_module)
    optimizer = net.Adam(list(decoder.parameters()) + list(mcc_module.parameters()), lr=lr)
    return network, decoder, mcc_module, optimizer


def loaders(args, start, samples):
    """Content and style streams from iteration `start` and stream position `samples` on.

    A batch here is the global one; under MPI, Jittor hands each rank its share.
    """
    batch = args.batch_size * jt.world_size

    def stream(folder, salt):
        return sampler.InfiniteImageFolder(folder, batch, (args.max_iter - start) * batch, seed=args.seed + salt,
                                           start=samples, n_threads=args.n_threads, crop=args.crop_size)
    return stream(args.content_dir, 0), stream(args.style_dir, 1)


def stop_requests():
    """A list that gets an entry whenever STOP_SIGNAL arrives, read at each iteration (the data workers, which Slurm
    signals too, ignore it: `sampler.set_up_worker`)."""
    requests = []
    signal.signal(STOP_SIGNAL, lambda signum, frame: requests.append(signum))
    return requests


def report_stop(save_dir, iteration, max_iter):
    """The line that ends a run stopped by STOP_SIGNAL, and its exit status: 128 + the signal, as for SIGTERM and
    Ctrl-C, since the run is not finished."""
    if jt.rank == 0:
        print(f"stopped at iteration {iteration} of {max_iter} on {STOP_SIGNAL.name}: its checkpoint "
              f"{checkpoint_paths(save_dir, iteration)['state']} is written; --resume continues", file=sys.stderr)
    raise SystemExit(128 + STOP_SIGNAL)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    stop_asked = stop_requests()
    backend.use_device(args.use_cuda)
    if not jt.flags.use_cuda:
        check_that_a_step_fits_in_memory(args.batch_size, args.crop_size, args.n_threads)
    if jt.rank == 0:
        writable_folder(args.save_dir, "save_dir")
        writable_folder(args.log_dir, "log_dir")
        if not args.resume:
            refuse_earlier_checkpoints(args.save_dir)
        remove_stale_temporaries(args.save_dir)
    network, decoder, mcc_module, optimizer = build(args.vgg, args.lr, args.seed)
    start, samples = resume(args.resume, args.save_dir, decoder, mcc_module, optimizer) if args.resume else (0, 0)
    if start >= args.max_iter:
        raise UserError(f"the checkpoint is at iteration {start}, --max_iter is {args.max_iter}: nothing to do")
    content_loader, style_loader = loaders(args, start, samples)
    log = TrainingLog(args.log_dir, start) if jt.rank == 0 else None
    progress = tqdm(range(start, args.max_iter), initial=start, total=args.max_iter, disable=jt.rank != 0,
                    file=sys.stderr, dynamic_ncols=True)
    stopped = False
    too_large = UserError(f"--batch_size {args.batch_size} --crop_size {args.crop_size}: a training step does not fit "
                          "in the GPU's memory: lower them")
    try:
        for iteration, content, style in zip(progress, content_loader, style_loader):
            sampler.raise_failure(content_loader, style_loader)
            optimizer.lr = learning_rate(args.lr, args.lr_decay, iteration)
            noise = noise_for(args.seed, iteration, samples + jt.rank * args.batch_size, content.shape)
            with backend.gpu_memory_short_as(too_large):
                values = train_step(network, optimizer, content, style, noise, args.content_weight,
                                    args.style_weight, bool(stop_asked))
            done, samples = iteration + 1, samples + args.batch_size * jt.world_size
            stopped = values.pop(STOP) > 0 and done < args.max_iter  # on every rank alike: see train_step
            check_finite(values, done, args.save_dir)
            if log:
                progress.set_postfix(content=f"{values['content']:.3f}", style=f"{values['style']:.3f}",
                                     total=f"{values['total']:.1f}")
                log.losses(done, optimizer.lr, values, done % args.log_interval == 0)
                if done % args.sample_interval == 0:
                    with jt.no_grad():
                        stylized = network.generate(network.encode_with_intermediate(content),
                                                    network.encode_with_intermediate(style)).numpy()
                    log.samples(done, content.numpy(), style.numpy(), stylized)
                if done % args.save_model_interval == 0 or done == args.max_iter or stopped:
                    save_checkpoint(args.save_dir, done, samples, decoder, mcc_module, optimizer, args.save_pth)
            if stopped:
                break
    finally:
        progress.close()
        content_loader.terminate()
        style_loader.terminate()
        if log:
            log.close()
    if stopped:
        report_stop(args.save_dir, done, args.max_iter)


if __name__ == "__main__":
    run(main, workers=True, coupled_ranks=True)
