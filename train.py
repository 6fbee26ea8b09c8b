"""Train MCCNet's decoder and MCC module (the VGG encoder stays frozen).

    python train.py --content_dir data/train2014 --style_dir data/wikiart --batch_size 8

Losses, weights, optimizer and learning-rate decay are the original's (MCCNET_SPEC.md §5).
Checkpoints go to --save_dir (default models/, apart from the published weights in
experiments/): `decoder_iter_N.pkl` and `mcc_module_iter_N.pkl` (loadable by
test_video.py; with --save_pth also `.pth` files that the original PyTorch code loads) and
`state_iter_N.pkl` (optimizer moments and position) for --resume. Every file is written
atomically and the state file last, so a run killed at any moment leaves the previous
checkpoint whole. Under `mpirun -np N`, Jittor averages gradients over the ranks, each rank
trains on its own --batch_size images (an effective batch of N × --batch_size), and rank 0
alone writes checkpoints and logs.
"""
import argparse
import csv
import glob
import os
import re
import sys

import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

import backend
import jittor as jt
import net
import sampler
import transformer
import weights
from cli import UserError, run, writable_folder

STATE_PATTERN = re.compile(r"state_iter_(\d+)\.pkl$")
LOSS_NAMES = tuple(net.LOSS_WEIGHTS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--content_dir", required=True, help="folder of content images (e.g. MS-COCO train2014)")
    parser.add_argument("--style_dir", required=True,
                        help="folder of style images (e.g. WikiArt), flat or in sub-folders")
    parser.add_argument("--vgg", default="experiments/vgg_normalised.pth", help="encoder weights (.pth or .pkl)")
    parser.add_argument("--save_dir", default="models",
                        help="where checkpoints go (default models/, kept apart from experiments/)")
    parser.add_argument("--log_dir", default="logs", help="TensorBoard events, losses.csv and sample grids")
    parser.add_argument("--lr", type=float, default=1e-4, help="initial learning rate")
    parser.add_argument("--lr_decay", type=float, default=5e-5, help="lr at iteration i is lr / (1 + lr_decay · i)")
    parser.add_argument("--max_iter", type=int, default=160000, help="iterations in all")
    parser.add_argument("--batch_size", type=int, default=8, help="images per iteration (per rank under MPI)")
    parser.add_argument("--crop_size", type=int, default=256,
                        help="training crop size; images are first resized to twice this, square "
                             "(the original: 256 from 512)")
    parser.add_argument("--style_weight", type=float, default=10.0, help="weight of the style loss")
    parser.add_argument("--content_weight", type=float, default=3.0, help="weight of the content loss")
    parser.add_argument("--n_threads", type=int, default=16,
                        help="image-decoding worker processes per loader; 0 decodes in the main process")
    parser.add_argument("--save_model_interval", type=int, default=10000, help="iterations between checkpoints")
    parser.add_argument("--log_interval", type=int, default=10, help="iterations between TensorBoard scalars")
    parser.add_argument("--sample_interval", type=int, default=1000,
                        help="iterations between sample grids (content | style | stylized)")
    parser.add_argument("--seed", type=int, default=0, help="seeds data order, crops and noise: runs are reproducible")
    parser.add_argument("--resume", nargs="?", const="latest",
                        help="continue from the newest complete checkpoint in --save_dir, or from the "
                             "given state_iter_N.pkl; an error if there is none")
    parser.add_argument("--save_pth", action="store_true", help="also write PyTorch .pth checkpoints")
    backend.add_device_argument(parser)
    return parser.parse_args(argv)


def check_args(args):
    positive = ("max_iter", "batch_size", "save_model_interval", "log_interval", "sample_interval")
    if args.crop_size < 32:
        raise UserError(f"--crop_size {args.crop_size}: must be at least 32 (the losses reach relu5_1)")
    for flag in positive:
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be at least 1")
    if not args.lr > 0:
        raise UserError(f"--lr {args.lr}: must be positive")
    for flag in ("lr_decay", "style_weight", "content_weight", "n_threads"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} {getattr(args, flag)}: must not be negative")


def is_main_rank():
    return not jt.in_mpi or jt.rank == 0


# ---------------------------------------------------------------- one iteration

def learning_rate(args, iteration):
    """The original's decay, applied before every iteration."""
    return args.lr / (1.0 + args.lr_decay * iteration)


def noise_for(seed, iteration, shape):
    """c' − c for one batch: σ ~ U(0.01, 0.02), then N(0, σ²), drawn from (seed, iteration) so
    that a resumed run draws what an uninterrupted one would."""
    rng = np.random.default_rng([seed, iteration, 2])
    sigma = rng.uniform(*net.NOISE_SIGMA_RANGE)
    return (rng.standard_normal(shape) * sigma).astype(np.float32)


def train_step(network, optimizer, content, style, noise, args):
    """One optimisation step; returns the loss terms and the weighted total as floats."""
    losses = network(content, style, jt.array(noise))
    total = net.total_loss(losses, args.content_weight, args.style_weight)
    optimizer.step(total)
    values = {name: float(value.item()) for name, value in losses.items()}
    values["total"] = float(total.item())
    return values


# ---------------------------------------------------------------- checkpoints

def checkpoint_paths(folder, iteration):
    return {name: os.path.join(folder, f"{name}_iter_{iteration}.pkl") for name in ("decoder", "mcc_module", "state")}


def optimizer_state(optimizer, iteration):
    group = optimizer.param_groups[0]
    state = {"iteration": np.array(iteration), "n_step": np.array(optimizer.n_step)}
    for i, (m, v) in enumerate(zip(group["m"], group["values"])):
        state[f"m.{i}"], state[f"v.{i}"] = m.numpy(), v.numpy()
    return state


def save_checkpoint(folder, iteration, decoder, mcc_module, optimizer, save_pth):
    paths = checkpoint_paths(folder, iteration)
    weights.save_weights(decoder, paths["decoder"])
    weights.save_weights(mcc_module, paths["mcc_module"])
    if save_pth:
        weights.save_weights(decoder, paths["decoder"][:-4] + ".pth")
        weights.save_weights(mcc_module, paths["mcc_module"][:-4] + ".pth")
    weights.write_state_dict(optimizer_state(optimizer, iteration), paths["state"])  # last: marks it complete


def newest_checkpoint(folder):
    """The state file of the highest complete checkpoint in `folder`, or None."""
    found = []
    for path in glob.glob(os.path.join(folder, "state_iter_*.pkl")):
        iteration = int(STATE_PATTERN.search(path).group(1))
        if all(os.path.isfile(p) for p in checkpoint_paths(folder, iteration).values()):
            found.append((iteration, path))
    return max(found)[1] if found else None


def resume(state_path, decoder, mcc_module, optimizer):
    """Load a checkpoint; returns the iteration it was taken at."""
    match = STATE_PATTERN.search(state_path)
    if not match or not os.path.isfile(state_path):
        raise UserError(f"--resume {state_path}: not a state_iter_N.pkl file")
    folder, iteration = os.path.dirname(state_path), int(match.group(1))
    paths = checkpoint_paths(folder, iteration)
    weights.load_weights(decoder, paths["decoder"], "the decoder")
    weights.load_weights(mcc_module, paths["mcc_module"], "the MCC module")
    state = weights.read_state_dict(state_path)
    group = optimizer.param_groups[0]
    expected = {"iteration": (), "n_step": ()}
    for i, (m, v) in enumerate(zip(group["m"], group["values"])):
        expected[f"m.{i}"], expected[f"v.{i}"] = tuple(m.shape), tuple(v.shape)
    weights.check_state_dict(state, expected, state_path, "this training's optimizer")
    for i, (m, v) in enumerate(zip(group["m"], group["values"])):
        m.update(jt.array(state[f"m.{i}"]))
        v.update(jt.array(state[f"v.{i}"]))
    optimizer.n_step = int(state["n_step"])
    return int(state["iteration"])


# ---------------------------------------------------------------- logs

class TrainingLog:
    """losses.csv (every iteration), TensorBoard scalars and images, and PNG sample grids."""

    def __init__(self, folder, resumed):
        """A fresh run starts a new losses.csv; a resumed one appends to it (or starts one)."""
        self.folder = folder
        path = os.path.join(folder, "losses.csv")
        new_file = not resumed or not os.path.isfile(path) or os.path.getsize(path) == 0
        self.csv_file = open(path, "w" if new_file else "a", newline="")
        self.csv = csv.writer(self.csv_file)
        if new_file:
            self.csv.writerow(("iteration", "lr") + LOSS_NAMES + ("total",))
        self.tensorboard = SummaryWriter(folder)

    def losses(self, iteration, lr, values, to_tensorboard):
        self.csv.writerow([iteration, f"{lr:.6g}"] + [f"{values[n]:.6g}" for n in LOSS_NAMES + ("total",)])
        if to_tensorboard:
            self.csv_file.flush()
            self.tensorboard.add_scalar("loss_content", values["content"], iteration)
            self.tensorboard.add_scalar("loss_style", values["style"], iteration)
            self.tensorboard.add_scalar("total_loss", values["total"], iteration)

    def samples(self, iteration, content, style, stylized):
        """A grid with one row per image of the batch (at most 4): content | style | stylized."""
        rows = [np.concatenate([transformer.array_to_image(a[i]) for a in (content, style, stylized)], axis=1)
                for i in range(min(4, len(content)))]
        grid = np.concatenate(rows, axis=0)
        weights.write_atomically(os.path.join(self.folder, f"sample_iter_{iteration}.png"),
                                 transformer.image_bytes(grid, ".png"))
        for name, batch in (("content", content), ("style", style), ("Ics", stylized)):
            self.tensorboard.add_image(name, np.clip(batch[0], 0, 1), iteration)

    def close(self):
        self.csv_file.close()
        self.tensorboard.close()


# ---------------------------------------------------------------- main

def build(args):
    vgg, decoder, mcc_module = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    weights.load_weights(vgg, args.vgg, "the VGG encoder")
    network = net.Net(vgg, decoder, mcc_module)
    optimizer = net.Adam(list(decoder.parameters()) + list(mcc_module.parameters()), lr=args.lr)
    return network, decoder, mcc_module, optimizer


def loaders(args, start):
    """Content and style streams from iteration `start` on; under MPI a batch holds every rank's share."""
    batch = args.batch_size * (jt.world_size if jt.in_mpi else 1)

    def stream(folder, salt):
        return sampler.InfiniteImageFolder(folder, batch, (args.max_iter - start) * batch, seed=args.seed + salt,
                                           start=start * batch, n_threads=args.n_threads, crop=args.crop_size)
    return stream(args.content_dir, 0), stream(args.style_dir, 1)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    backend.use_device(args.use_cuda)
    if is_main_rank():
        writable_folder(args.save_dir, "save_dir")
        writable_folder(args.log_dir, "log_dir")
    network, decoder, mcc_module, optimizer = build(args)
    start = 0
    if args.resume:
        state_path = newest_checkpoint(args.save_dir) if args.resume == "latest" else args.resume
        if state_path is None:
            raise UserError(f"--resume: no complete checkpoint in {args.save_dir}; run without --resume to start fresh")
        start = resume(state_path, decoder, mcc_module, optimizer)
    if start >= args.max_iter:
        raise UserError(f"the checkpoint is at iteration {start}, --max_iter is {args.max_iter}: nothing to do")
    content_loader, style_loader = loaders(args, start)
    log = TrainingLog(args.log_dir, resumed=start > 0) if is_main_rank() else None
    progress = tqdm(range(start, args.max_iter), initial=start, total=args.max_iter, disable=not is_main_rank(),
                    file=sys.stderr, dynamic_ncols=True)
    try:
        for iteration, content, style in zip(progress, content_loader, style_loader):
            optimizer.lr = learning_rate(args, iteration)
            values = train_step(network, optimizer, content, style, noise_for(args.seed, iteration, content.shape), args)
            done = iteration + 1
            if log:
                progress.set_postfix(content=f"{values['content']:.3f}", style=f"{values['style']:.3f}",
                                     total=f"{values['total']:.1f}")
                log.losses(done, optimizer.lr, values, done % args.log_interval == 0)
                if done % args.sample_interval == 0:
                    with jt.no_grad():
                        stylized = network.generate(network.encode_with_intermediate(content),
                                                    network.encode_with_intermediate(style)).numpy()
                    log.samples(done, content.numpy(), style.numpy(), stylized)
                if done % args.save_model_interval == 0 or done == args.max_iter:
                    save_checkpoint(args.save_dir, done, decoder, mcc_module, optimizer, args.save_pth)
    finally:
        if log:
            log.close()


if __name__ == "__main__":
    run(main)
