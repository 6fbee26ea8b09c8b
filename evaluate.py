"""Measure what MCCNet promises: a stylized video that does not flicker, and is stylized.

    python evaluate.py --content input/videos/astronaut.mp4 \\
        --stylized output/astronaut_stylized_strokes.mp4 --style input/style/strokes.jpg

Give --stylized several times to compare methods or settings side by side. Frame t of every
stylized video is compared with frame t of the content video; all must have the same
number of frames and size (--resize_stylized scales stylized frames to the content's size).

For each pair of consecutive frames (t−1, t), I = input and S = stylized, values in [0, 1]:
- Warping error, the protocol of the video style-transfer literature (Lai et al. 2018):
  optical flow of the INPUT frames by OpenCV's DIS (preset "medium", on grey frames), both
  t→t−1 (b) and t−1→t (f); pixel x of frame t counts when x + b(x) falls inside the frame
  and passes the forward-backward check of Ruder et al. 2016,
  |b(x) + f(x + b(x))|² ≤ 0.01 (|b(x)|² + |f(x + b(x))|²) + 0.5; the error is
  sqrt(mean over counted pixels and channels of (S_t(x) − S_{t−1}(x + b(x)))²). The same on
  the input video is the floor that flow errors and lighting changes leave.
- Frame-difference error, without flow: the RMS of (S_t − S_{t−1}) − (I_t − I_{t−1}) over all
  pixels, and in feature space mse(ΔN(S), ΔN(I)), N = the normalised relu4_1 features of the
  content loss.
For each frame: the content loss and (with --style) the style loss of the training
objective (docs/mccnet.md) of S_t against I_t and the style image; the style image is
sized as test_video.py sizes it (shorter side = the frame height).

The VGG figures (frame difference in relu4_1, content and style loss) need a VGG pass to
relu5_1 over every input and stylized frame: more work than stylizing the video took. By
default they are computed on one pair of consecutive frames in every 4 (frames 0 and 1, 4
and 5, …: half the frames, a quarter of the pairs), which keeps evaluating faster than
stylizing; --feature_every 1 computes them on every frame. Frames left out are null in the
report; the means are over the frames computed.

Writes to --output: report.json (every figure, per video and per frame), strip.png (input
and stylized frames), heatmaps.png (|I_t − I_{t−1}| beside |S_t − S_{t−1}|) and
temporal_error.png (warping error per frame), and prints a table. It runs as one process (under `mpirun` with
several ranks it says so and stops).
"""
import contextlib
import io
import json
import os
import warnings

# cli first, before any package: a package missing there is one line (`cli._missing_module_as_one_line`).
from cli import ArgumentParser, UserError, one_line, regular_file, run, write_atomically, writable_folder

import cv2
import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from tqdm import tqdm

import backend
import download_weights
import jittor as jt
import net
import transformer
import video
import weights

DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
CONSISTENCY = (0.01, 0.5)  # Ruder et al.: relative and absolute tolerance of the forward-backward check
NAN = float("nan")
FEATURE_EVERY = 4  # default --feature_every: the VGG figures on half the frames keep evaluating faster than stylizing
COLUMNS = ("warping_error", "frame_difference_pixels", "frame_difference_relu4_1", "content_loss", "style_loss")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--content", required=True,
                        help="the input video that was stylized: a video file or an image sequence (frames/%%05d.png)")
    parser.add_argument("--stylized", required=True, action="append",
                        help="a stylized video of --content (a file or an image sequence, such as test_video.py "
                             "--save_frames writes); give it several times to compare")
    parser.add_argument("--style", help="the style image, for the style loss (left out without it)")
    parser.add_argument("--output", help="folder for the report (default: output/<first stylized name>_evaluation)")
    parser.add_argument("--vgg_path", "--vgg", default=download_weights.DEFAULT_PATHS[0],
                        help="the VGG encoder's weights, for the feature-space figures (download_weights.py)")
    parser.add_argument("--resize_stylized", action="store_true",
                        help="scale stylized frames to the content's size instead of refusing other sizes")
    parser.add_argument("--strip_frames", type=int, default=4,
                        help="frames shown in strip.png and heatmaps.png")
    parser.add_argument("--feature_every", type=int, default=FEATURE_EVERY, metavar="K",
                        help="compute the VGG figures on one pair of consecutive frames in every K: "
                             f"frames 0 and 1, K and K+1, … (default {FEATURE_EVERY}; 1 = every frame, the slowest)")
    parser.add_argument("--max_pixels", type=int, default=transformer.MAX_PIXELS,
                        help=f"refuse frames larger than this many pixels (default {transformer.MAX_PIXELS:,} = 4096²)")
    backend.add_device_argument(parser)
    args = parser.parse_args(argv)
    for flag in ("strip_frames", "feature_every", "max_pixels"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be at least 1")
    if args.output is None:
        args.output = os.path.join("output", f"{video.media_name(args.stylized[0])}_evaluation")
    return args


# ---------------------------------------------------------------- reading the videos

def video_facts(path, flag):
    """(frame count, width, height) of an upright video (`count_frames`, its first frame)."""
    if video.probe(video.existing_input(path, flag)) != "video":
        raise UserError(f"{flag} {path}: not a video that can be read")
    with contextlib.closing(video.open_video(path)) as reader:
        count = reader.count_frames()
    with contextlib.closing(video.open_video(path)) as reader:
        first = next(reader.frames(), (None,))[0]
    if first is None:
        why = f" ({reader.problem})" if reader.problem else ""
        raise UserError(f"{flag} {path}: no frame can be decoded{why}")
    if count < 2:
        raise UserError(f"{flag} {path}: {count} frame; temporal consistency needs at least two")
    return count, first.shape[1], first.shape[0]


def check_videos(args):
    """The content's (frames, width, height), after checking that every stylized video matches it."""
    frames, width, height = video_facts(args.content, "--content")
    if min(width, height) < net.MIN_SIDE:
        raise UserError(f"--content {args.content}: {width}x{height} is too small for the VGG "
                        f"(at least {net.MIN_SIDE}x{net.MIN_SIDE})")
    try:
        transformer.check_pixels(width, height, min(args.max_pixels, net.MAX_POOL_PIXELS), "a frame")
    except transformer.TooLarge as error:
        raise UserError(f"--content {args.content}: {error} (--max_pixels raises it)")
    for path in args.stylized:
        n, w, h = video_facts(path, "--stylized")
        if n != frames:
            raise UserError(f"--stylized {path} has {n} frames, --content {args.content} has {frames} "
                            f"({abs(n - frames)} {'more' if n > frames else 'fewer'}): frame t must match frame t")
        if (w, h) != (width, height) and not args.resize_stylized:
            raise UserError(f"--stylized {path} is {w}x{h}, --content {args.content} is {width}x{height} "
                            f"({w - width:+d} px wide, {h - height:+d} px high); "
                            "pass --resize_stylized to scale it to the content's size")
    return frames, width, height


def decoded_frames(path, size):
    """The video's frames as HWC uint8, scaled to `size` (width, height) when they differ."""
    with contextlib.closing(video.open_video(path)) as reader:
        for frame, _ in reader.frames():
            if (frame.shape[1], frame.shape[0]) != size:
                frame = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
            yield frame


# ---------------------------------------------------------------- flow and warping

def optical_flows(previous, current):
    """(backward t→t−1, forward t−1→t) flows of two RGB uint8 frames, each H × W × 2 (dx, dy)."""
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)
    previous, current = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (previous, current))
    return dis.calc(current, previous, None), dis.calc(previous, current, None)


def sample(image, flow):
    """image(x + flow(x)) by bilinear interpolation; positions outside the image give 0."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def valid_mask(backward, forward):
    """Pixels of frame t whose flow into t−1 lands inside the frame and passes the forward-backward check."""
    h, w = backward.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w), np.arange(h))
    x, y = grid_x + backward[..., 0], grid_y + backward[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    forward_there = sample(forward, backward)
    round_trip = ((backward + forward_there) ** 2).sum(axis=2)
    lengths = (backward ** 2).sum(axis=2) + (forward_there ** 2).sum(axis=2)
    return inside & (round_trip <= CONSISTENCY[0] * lengths + CONSISTENCY[1])


def warping_error(previous, current, backward, mask):
    """RMS difference, on [0, 1], between frame t and frame t−1 warped onto it, over the masked pixels."""
    if not mask.any():
        return float("nan")
    warped = sample(previous.astype(np.float32) / 255, backward)
    difference = warped - current.astype(np.float32) / 255
    return float(np.sqrt((difference[mask] ** 2).mean()))


def frame_difference_error(previous_s, current_s, previous_i, current_i):
    """RMS of (S_t − S_{t−1}) − (I_t − I_{t−1}) on [0, 1]."""
    s = current_s.astype(np.float32) - previous_s.astype(np.float32)
    i = current_i.astype(np.float32) - previous_i.astype(np.float32)
    return float(np.sqrt((((s - i) / 255) ** 2).mean()))


# ---------------------------------------------------------------- VGG features

class Encoder:
    """The frozen VGG: a frame's relu1_1..relu5_1 (computed lazily: only what a figure uses)."""

    def __init__(self, path):
        try:
            self.vgg = weights.load_weights(net.make_vgg(), path, "the VGG encoder")
        except UserError as error:
            raise UserError(f"{error} (--vgg_path; `python download_weights.py` fetches it)")

    def __call__(self, frame):
        with jt.no_grad():
            return net.encode(self.vgg, jt.array(transformer.image_to_array(frame)[None]))


def style_targets(path, encoder, height, max_pixels):
    """The style loss's targets for the style image, sized as test_video.py sizes it.

    Computed once: every frame's style loss compares with these.
    """
    try:
        image = transformer.load_image(regular_file(path, "--style"))
        image = transformer.resize_shorter_side(image, transformer.style_side(height), max_pixels)
    except transformer.DAMAGED_PICTURE_ERRORS as error:
        raise UserError(f"--style {path}: not an image that can be used ({one_line(error)})")
    statistics = net.style_statistics(encoder(np.asarray(image)))
    jt.sync([value for pair in statistics for value in pair])
    return statistics


# ---------------------------------------------------------------- measuring

class Track:
    """The figures of one video: the input (warping error only: the floor) or a stylized one."""

    def __init__(self, name):
        self.name = name
        self.figures = {column: [] for column in COLUMNS}

    def summary(self):
        """Each figure's mean over the video; pairs without a counted pixel (NaN) are left out."""
        return {column: _finite_mean(values) for column, values in self.figures.items() if values}


def _finite_mean(values):
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def has_features(t, every):
    """Whether frame t gets the VGG figures: frames 0 and 1, every and every + 1, … (all when every is 1 or 2)."""
    return t % every in (0, 1)


def measure(args, n_frames, size, encoder, style_stats, picture_indices):
    """Go through all videos in step; returns the tracks (input first) and the pictures' frames.

    Only the previous frame of each video is kept (and the few frames the pictures show),
    so memory does not grow with the video's length. VGG figures of the frames that
    --feature_every leaves out are NaN (null in the report).
    """
    tracks = [Track(args.content)] + [Track(path) for path in args.stylized]
    streams = [decoded_frames(path, size) for path in [args.content] + args.stylized]
    pictures = {}  # t → (frames at t, frames at t − 1), input first
    previous, previous_normalised, decoded = None, None, 0
    for t, frames in enumerate(tqdm(zip(*streams), total=n_frames, unit="frame", desc="evaluating")):
        feats = [encoder(frame) for frame in frames] if has_features(t, args.feature_every) else None
        normalised = [net.normal(f[net.RELU4_1 - 1]) for f in feats] if feats else None
        if t:
            backward, forward = optical_flows(previous[0], frames[0])
            mask = valid_mask(backward, forward)
            for i, track in enumerate(tracks):
                track.figures["warping_error"].append(warping_error(previous[i], frames[i], backward, mask))
            for i, track in enumerate(tracks[1:], 1):
                track.figures["frame_difference_pixels"].append(
                    frame_difference_error(previous[i], frames[i], previous[0], frames[0]))
                track.figures["frame_difference_relu4_1"].append(
                    feature_difference(normalised, previous_normalised, i))
            if t in picture_indices:
                pictures[t] = (frames, previous)
        for i, track in enumerate(tracks[1:], 1):
            content_loss, style_loss = stylization_losses(feats, i, style_stats)
            track.figures["content_loss"].append(content_loss)
            if style_stats is not None:
                track.figures["style_loss"].append(style_loss)
        if normalised:
            jt.sync(normalised)  # computed now: the next frame needs only these, not their graph
        previous, previous_normalised, decoded = frames, normalised, t + 1
    if decoded != n_frames:
        raise UserError(f"only {decoded} of {n_frames} frames could be decoded from every video: "
                        "one of them is damaged")
    return tracks, pictures


def stylization_losses(feats, i, style_stats):
    """(content loss, style loss) of stylized video i at this frame; NaN without features (or style)."""
    if feats is None:
        return NAN, NAN
    content_loss = float(net.content_loss(feats[i], feats[0]).item())
    style_loss = float(net.style_loss(feats[i], style_stats).item()) if style_stats is not None else NAN
    return content_loss, style_loss


def feature_difference(normalised, previous_normalised, i):
    """mse(ΔN(S), ΔN(I)) of stylized video i, or NaN when either frame has no features."""
    if normalised is None or previous_normalised is None:
        return NAN
    difference = net.mse(normalised[i] - previous_normalised[i], normalised[0] - previous_normalised[0])
    return float(difference.item())


# ---------------------------------------------------------------- the report

def picture_indices(n_frames, count):
    """Up to `count` frame indices t ≥ 1 (pairs t−1, t), evenly spread over the video."""
    return sorted({int(round(t)) for t in np.linspace(1, n_frames - 1, min(count, n_frames - 1))})


def report(args, tracks, n_frames, size):
    """Everything measured, as JSON-ready data (NaN, a pair without a counted pixel, as null)."""
    def clean(values):
        return [v if np.isfinite(v) else None for v in values]
    return {
        "content": args.content,
        "frames": n_frames,
        "size": list(size),
        "flow": {"method": "OpenCV DIS optical flow on grey input frames", "preset": "medium",
                 "opencv": cv2.__version__,
                 "occlusion_check": "|b + f(x + b)|^2 <= %g (|b|^2 + |f(x + b)|^2) + %g" % CONSISTENCY},
        "definitions": {
            "warping_error": "RMS over counted pixels of S_t - warp(S_t-1), [0, 1] scale; per pair t-1, t",
            "frame_difference_pixels": "RMS of (S_t - S_t-1) - (I_t - I_t-1), [0, 1] scale; per pair",
            "frame_difference_relu4_1": "mse of the same differences of mean-std normalised relu4_1; "
                                        "per pair whose frames have VGG features, else null",
            "content_loss": "the training content loss of S_t against I_t; per frame with VGG features, else null",
            "style_loss": "the training style loss of S_t against the style image; per frame with VGG features, "
                          "else null",
        },
        "feature_every": args.feature_every,
        "feature_frames": "VGG features of frames t with t mod feature_every in {0, 1} (every frame when 1 or 2)",
        "style": args.style,
        "input": {"mean": tracks[0].summary(),
                  "per_frame": {"warping_error": clean(tracks[0].figures["warping_error"])}},
        "stylized": [{"path": track.name, "mean": track.summary(),
                      "per_frame": {column: clean(values) for column, values in track.figures.items() if values}}
                     for track in tracks[1:]],
    }


def table(data):
    """The means as a markdown table, the input's warping error first (the floor)."""
    names = ["warping error", "frame diff. (pixels)", "frame diff. (relu4_1)", "content loss", "style loss"]
    lines = ["| video | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    rows = [(f"{data['content']} (input: the floor)", data["input"]["mean"])]
    rows += [(entry["path"], entry["mean"]) for entry in data["stylized"]]
    for name, means in rows:
        cells = [f"{means[c]:.4g}" if means.get(c) is not None else "—" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def png_bytes(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def grid_figure(row_names, column_titles, frame_shape):
    """A grid of image axes without ticks, shaped for the frames: row names at the left, titles on top."""
    height, width = frame_shape[:2]
    figure = Figure(figsize=(2.6 * len(column_titles) + 0.6, (2.6 * height / width + 0.35) * len(row_names) + 0.2),
                    layout="constrained")
    axes = figure.subplots(len(row_names), len(column_titles), squeeze=False)
    for row, name in enumerate(row_names):
        for column, title in enumerate(column_titles):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(name, fontsize=9)
    return figure, axes


def strip_picture(pictures, names):
    """Input frames over each stylized video's frames, at the pictured times."""
    times = sorted(pictures)
    figure, axes = grid_figure(names, [f"frame {t}" for t in times], pictures[times[0]][0][0].shape)
    for column, t in enumerate(times):
        for row, frame in enumerate(pictures[t][0]):
            axes[row, column].imshow(frame)
    return png_bytes(figure)


def heatmap_picture(pictures, names):
    """|frame t − frame t−1| (mean over RGB, [0, 1]) of the input and of each stylized video, one scale."""
    times = sorted(pictures)
    differences = {t: [np.abs(now.astype(np.float32) - before.astype(np.float32)).mean(axis=2) / 255
                       for now, before in zip(*pictures[t])] for t in times}
    top = max(max(float(d.max()) for d in ds) for ds in differences.values()) or 1.0
    figure, axes = grid_figure(names, [f"|frame {t} − frame {t - 1}|" for t in times], pictures[times[0]][0][0].shape)
    for column, t in enumerate(times):
        for row, difference in enumerate(differences[t]):
            image = axes[row, column].imshow(difference, cmap="magma", vmin=0, vmax=top)
    figure.colorbar(image, ax=axes, shrink=0.8, label="absolute difference, [0, 1]")
    return png_bytes(figure)


def temporal_error_picture(tracks, names):
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.subplots()
    for track, name in zip(tracks, names):
        values = [v if np.isfinite(v) else np.nan for v in track.figures["warping_error"]]
        style = dict(color="grey", linestyle="--") if track is tracks[0] else {}
        axes.plot(range(1, len(values) + 1), values, label=name, **style)
    axes.set_xlabel("frame t (against t − 1)")
    axes.set_ylabel("warping error, [0, 1] RMS")
    axes.set_title("Temporal consistency: lower is steadier; the input is the floor")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return png_bytes(figure)


def row_names(n_stylized):
    """'input', then 'stylized' or 'stylized 1', 'stylized 2'… in the order of --stylized."""
    if n_stylized == 1:
        return ["input", "stylized"]
    return ["input"] + [f"stylized {i}" for i in range(1, n_stylized + 1)]


def shown_name(path):
    """A video's name in a legend: its file name, or an image sequence's folder and pattern (bear/%05d.png)."""
    return os.path.join(*path.split(os.sep)[-2:]) if video.is_image_sequence(path) else os.path.basename(path)


def write_report(folder, data, tracks, pictures):
    # Jittor's fast-math code switches on flush-to-zero in this process; numpy then warns,
    # harmlessly, when matplotlib asks for float64's smallest subnormal.
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
    names = row_names(len(tracks) - 1)
    legend = ["input"] + [f"{name}: {shown_name(track.name)}" for name, track in zip(names[1:], tracks[1:])]
    files = {"report.json": json.dumps(data, indent=1).encode(),
             "strip.png": strip_picture(pictures, names),
             "heatmaps.png": heatmap_picture(pictures, names),
             "temporal_error.png": temporal_error_picture(tracks, legend)}
    for name, content in files.items():
        write_atomically(os.path.join(folder, name), content)
    return [os.path.join(folder, name) for name in files]


def check_one_process():
    """evaluate.py is one process's work: under `mpirun -np N` each rank would evaluate every video, writing the same
    report and printing the same table N times, no sooner than one process."""
    if jt.in_mpi and jt.world_size > 1:
        raise UserError(f"evaluate.py runs as one process, and mpirun started {jt.world_size}, each of which would "
                        "evaluate every video: run it without mpirun")


def main(argv=None):
    args = parse_args(argv)
    check_one_process()
    backend.use_device(args.use_cuda)
    n_frames, width, height = check_videos(args)
    writable_folder(args.output, "output")
    encoder = Encoder(args.vgg_path)
    too_large = UserError(f"{width}x{height} frames, or the style at their height, through the VGG do not fit in the "
                          "GPU's memory: evaluate on the CPU (--use_cuda 0)")
    with backend.gpu_memory_short_as(too_large):
        style_stats = style_targets(args.style, encoder, height, args.max_pixels) if args.style else None
        tracks, pictures = measure(args, n_frames, (width, height), encoder, style_stats,
                                   picture_indices(n_frames, args.strip_frames))
    data = report(args, tracks, n_frames, (width, height))
    written = write_report(args.output, data, tracks, pictures)
    print(table(data))
    with_features = sum(has_features(t, args.feature_every) for t in range(n_frames))
    print(f"\nFrame difference (relu4_1), content and style loss: from {with_features} of {n_frames} frames "
          f"(--feature_every {args.feature_every}; 1 = every frame)")
    print(f"Report: {', '.join(written)}")


if __name__ == "__main__":
    run(main, coupled_ranks=True)  # under mpirun, the ranks' error of `check_one_process` is reported once
