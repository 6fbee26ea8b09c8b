"""Stylize videos and images with MCCNet.

    python test_video.py --video input/videos/clip.mp4 --style input/style/painting.jpg
    python test_video.py --content DAVIS/bear/%05d.jpg --frame_rate 24 --style input/style/painting.jpg

A video is any file FFmpeg reads with a video stream, an animated picture, or an image sequence
(numbered pictures, named as FFmpeg and OpenCV name them). Every content × style pair is produced
as `<content>_stylized_<style>` in --output: an H.264/MP4 with the input's size, frame timestamps
and sound for a video, a --save_ext image for an image. The style is read, resized and encoded
once per pair (the original re-did it for every frame); frames go through the network in batches;
memory does not grow with the video's length. An input that cannot be used costs its own outputs
only (exit 1 at the end); under `mpirun -np N` each process makes every N-th output.
"""
import contextlib
import fractions
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass

# cli first, before any package: a package missing there is one line (`cli._missing_module_as_one_line`).
from cli import (ArgumentParser, UserError, atomic_output, existing_folder, one_line, ranks_work_apart, run,
                 write_atomically, writable_folder)

import numpy as np
from PIL import Image
from tqdm import tqdm

import backend
import download_weights
import jittor as jt
import net
import transformer
import video

IMAGE_CONTENT_SIZE = 512  # the original's image default; videos keep their size
# Frames per pass without --batch_size: up to DEFAULT_BATCH, as many as fit in PASS_PIXELS. On the CPU a pass of
# several large frames is no faster than one frame after another, and its memory grows with its pixels.
DEFAULT_BATCH, PASS_PIXELS = 4, 1280 * 720
# The frames/s that --frame_rate may give an image sequence: a frame every 1000 s (a time-lapse) to 1000 a second
# (beyond what cameras record), as fractions of a denominator up to 1001 (NTSC's 30000/1001): the MP4 muxer's
# time scale is a 32-bit number, which 29.97002997 taken exactly (2997002997/10^8) overflows.
MIN_FRAME_RATE, MAX_FRAME_RATE, RATE_DENOMINATOR = fractions.Fraction(1, 1000), 1000, 1001
# What a user can do about an image that is above --max_pixels once resized by the size flags.
RESIZED_TOO_LARGE = "(--max_pixels raises it; --content_size/--style_size shrink it)"
# The memory of a pass through the networks on the CPU, from its peak resident size for pictures of 360p to
# 4096×3072 (docs/history.md, 2026-12-07): 0.3 GB and 0.63-1.1 kB per pixel of a pass (the content's frames, or a
# style; the least at 1080p with a 512² style). Taken low, as what a pass needs at least.
PASS_BYTES, PASS_BYTES_PER_PIXEL = 0.3e9, 0.55e3


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    content = parser.add_argument_group("content (one of)")
    content.add_argument("--content", "--video", dest="content",
                         help="a content image or video file (any format FFmpeg or PIL reads, recognised "
                              "by its content), or an image sequence such as frames/%%05d.png; several, "
                              "comma-separated, are each stylized (a file whose name holds a comma: alone)")
    content.add_argument("--content_dir", help="a folder of content images and videos, and of folders of numbered "
                                               "pictures, each an image sequence (as DAVIS's)")
    style = parser.add_argument_group("style (one of)")
    style.add_argument("--style", help="a style image; several, comma-separated, are blended with "
                                       "--style_interpolation_weights (or each used in turn without)")
    style.add_argument("--style_dir", help="a folder of style images, each used in turn")
    parser.add_argument("--style_interpolation_weights",
                        help="comma-separated weights, one per --style, to blend the styles into one")
    parser.add_argument("--output", default="output", help="folder for the results")
    vgg, decoder, mcc = download_weights.DEFAULT_PATHS
    parser.add_argument("--vgg_path", "--vgg", default=vgg, help="encoder weights, .pth or .pkl")
    parser.add_argument("--decoder_path", "--decoder", default=decoder, help="decoder weights, .pth or .pkl")
    parser.add_argument("--transform_path", "--transform", default=mcc, help="MCC module weights, .pth or .pkl")
    parser.add_argument("--a", "--alpha", dest="alpha", type=float, default=1.0,
                        help="style strength in [0, 1]: 1 is full style, 0 reconstructs the content")
    parser.add_argument("--preserve_color", action="store_true",
                        help="keep the content's colours (CORAL on the style image; for a video, those of all "
                             "its frames, read once more first)")
    parser.add_argument("--content_size", type=int, default=None,
                        help="resize content so its shorter side is this; 0 keeps it (default: 512 for "
                             "images and 0 for videos, as the original)")
    parser.add_argument("--style_size", type=int, default=None,
                        help="resize the style so its shorter side is this; 0 keeps it (default: the "
                             "content's height, as the original)")
    parser.add_argument("--crop", action="store_true",
                        help="centre-crop the content (an image, or every frame of a video) and the style to "
                             "squares of pixels, of --content_size and --style_size (0: of their shorter sides)")
    parser.add_argument("--save_ext", default=".jpg", choices=(".jpg", ".png"),
                        help="image format of stylized images and --save_frames (.png is lossless)")
    parser.add_argument("--frame_rate", type=frame_rate, default=None,
                        help=f"frames per second of an image-sequence --content, such as 24 or 24000/1001 (default "
                             f"{video.DEFAULT_RATE}, as FFmpeg's); a video file keeps its own timing")
    parser.add_argument("--batch_size", type=int, default=None,
                        help=f"video frames per forward pass (default: up to {DEFAULT_BATCH}, as many as fit in "
                             "1280x720 pixels; more are no faster on the CPU and take more memory)")
    parser.add_argument("--skip_existing", action="store_true",
                        help="keep outputs that already exist instead of making them again, to resume an interrupted "
                             "run (outputs are written whole or not at all: one that exists is complete)")
    parser.add_argument("--save_frames", action="store_true",
                        help="also write each stylized video frame as an image in <output>/<name>_frames/: "
                             "000000, 000001, …, or for an image sequence its pictures' names")
    parser.add_argument("--max_pixels", type=int, default=transformer.MAX_PIXELS,
                        help=f"refuse to stylize images and frames larger than this many pixels, once sized by "
                             f"--content_size and --style_size (default {transformer.MAX_PIXELS:,} = 4096²; memory "
                             "grows with it, see README)")
    parser.add_argument("--half", action="store_true",
                        help="run the encoder and decoder in float16 (GPU only; the MCC module stays float32): "
                             "faster, and differs from float32 by round-off (see docs/gpu.md)")
    backend.add_device_argument(parser)
    return parser.parse_args(argv)


def frame_rate(text):
    """A --frame_rate, a number or a fraction (24, 23.976, 24000/1001), as the nearest fraction of a denominator
    up to RATE_DENOMINATOR (29.97002997: 30000/1001)."""
    return fractions.Fraction(text).limit_denominator(RATE_DENOMINATOR)


class InputError(UserError):
    """An input that cannot be stylized (unreadable, too small, too large): in a run over several inputs the
    others are still stylized, as hours of a folder's work should not end at one bad file."""


def check_args(args):
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: must be within [0, 1]")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size}: must be at least 1")
    if args.frame_rate is not None and not MIN_FRAME_RATE <= args.frame_rate <= MAX_FRAME_RATE:
        raise UserError(f"--frame_rate {args.frame_rate}: must be within [{MIN_FRAME_RATE}, {MAX_FRAME_RATE}]")
    if args.max_pixels < net.MIN_SIDE ** 2:
        raise UserError(f"--max_pixels {args.max_pixels}: must be at least {net.MIN_SIDE ** 2}")
    for flag in ("content_size", "style_size"):
        value = getattr(args, flag)
        if value is not None and value != 0 and value < net.MIN_SIDE:
            raise UserError(f"--{flag} {value}: must be 0 (keep) or at least {net.MIN_SIDE}")


# ---------------------------------------------------------------- inputs and outputs

def media_files(path, folder, what):
    """The files named by --X (comma-separated) or found in --X_dir, checked to be files."""
    if bool(path) == bool(folder):
        raise UserError(f"give either --{what} or --{what}_dir")
    if folder:
        existing_folder(folder, f"--{what}_dir {folder}")
        return folder_inputs(folder, what)
    paths = [path] if os.path.exists(path) else [p for p in path.split(",") if p]  # "Paris, 2019.jpg" is one
    for p in paths:
        if os.path.isdir(p):
            sequence = video.sequence_in(p) if what == "content" else None
            also = f", or its pictures as a video with --content {sequence}" if sequence else ""
            raise UserError(f"--{what} {p}: a folder; give a folder of inputs with --{what}_dir{also}")
    return [video.existing_input(p, f"--{what}") for p in paths]


def folder_inputs(folder, what):
    """The files of a --X_dir, and for --content_dir the image sequences of its folders (DAVIS/JPEGImages/480p
    holds a folder of numbered pictures for each video), by name."""
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("."):
            continue
        if os.path.isfile(path):
            found.append(path)
        elif what == "content" and os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK):
            sequence = video.sequence_in(path)
            if sequence:
                found.append(sequence)
    if not found:
        raise UserError(f"--{what}_dir {folder}: holds no files" + (" nor folders of numbered pictures"
                                                                    if what == "content" else ""))
    return found


def kinds_of(files, what, from_folder):
    """(path, 'image' | 'video') for each file; other files are an error, or skipped in a folder."""
    found = []
    for path in files:
        kind = video.probe(path)
        if kind is None:
            if not from_folder:
                raise UserError(f"{path}: neither an image nor a video that can be read")
            print(f"skipping {path}: neither an image nor a video", file=sys.stderr)
            continue
        found.append((path, kind))
    if not found:
        raise UserError(f"no readable {what} files")
    return found


def interpolation_weights(text, n_styles):
    if text is None:
        return None
    try:
        values = [float(w) for w in text.split(",")]
    except ValueError:
        raise UserError(f"--style_interpolation_weights {text}: not comma-separated numbers")
    if len(values) != n_styles:
        raise UserError(f"--style_interpolation_weights has {len(values)} weights for {n_styles} styles")
    if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise UserError(f"--style_interpolation_weights {text}: must be finite, non-negative, with a positive sum")
    return values


def style_groups(args):
    """A list of style groups: one group of several styles when interpolating, else one group per style."""
    files = media_files(args.style, args.style_dir, "style")
    styles = kinds_of(files, "style", from_folder=bool(args.style_dir))
    for path, kind in styles:
        if kind == "image":
            continue
        # The original opened the style with PIL, which gives an animated picture's first frame.
        if transformer.picture_format(path)[0] is None:
            raise UserError(f"--style {path}: a style must be an image, not a video")
        if jt.rank == 0:
            print(f"--style {path}: an animated picture; its first frame is the style", file=sys.stderr)
    paths = [p for p, _ in styles]
    weights_ = interpolation_weights(args.style_interpolation_weights, len(paths))
    return ([paths], weights_) if weights_ else ([[p] for p in paths], None)


def short_names(paths):
    """A name per input for output names (`video.media_name`), qualified where two inputs share a name."""
    names = [video.media_name(p) for p in paths]
    return {p: name if names.count(name) == 1 else video.media_name(p, qualified=True) for p, name in zip(paths, names)}


def plan_outputs(contents, groups, args):
    """{(content, its kind, style group): output path}, in the order of making them, after checking that no two
    collide and none is an input."""
    content_names = short_names([path for path, _ in contents])
    style_names = short_names(sorted({p for group in groups for p in group}))
    plan, sources = {}, {}
    for (content, kind), group in itertools.product(contents, groups):
        extension = ".mp4" if kind == "video" else args.save_ext
        name = f"{content_names[content]}_stylized_{'_'.join(style_names[p] for p in group)}{extension}"
        path = os.path.join(args.output, name)
        if path in sources:
            raise UserError(f"{content} and {sources[path]} would both be written to {path}: rename one")
        frames_dir = os.path.splitext(path)[0] + "_frames"
        if args.save_frames and kind == "video" and os.path.exists(frames_dir) and not os.path.isdir(frames_dir):
            raise UserError(f"--save_frames: {frames_dir} is a file, so the frames folder cannot be made there")
        plan[content, kind, tuple(group)], sources[path] = path, content
    inputs = {os.path.realpath(p) for p, _ in contents} | {os.path.realpath(p) for g in groups for p in g}
    for path in plan.values():
        if os.path.realpath(path) in inputs:
            raise UserError(f"{path} is one of the inputs: writing the result there would destroy it; "
                            "choose another --output")
    return plan


def without_existing(outputs):
    """The planned outputs less those that exist already (--skip_existing), saying how many are kept."""
    remaining = {pair: path for pair, path in outputs.items() if not os.path.isfile(path)}
    if len(remaining) < len(outputs):
        print(f"--skip_existing: {len(outputs) - len(remaining)} of {len(outputs)} output(s) exist and are kept",
              file=sys.stderr)
    return remaining


def share_of_this_rank(outputs):
    """Under `mpirun -np N`, every N-th planned output from this rank's number on (N GPUs stylize a folder N times
    as fast); all of them in one process. Shared before --skip_existing looks at the disk, which the other ranks
    are already writing to: every rank shares the same plan."""
    return dict(list(outputs.items())[jt.rank::jt.world_size])


def read_picture(path, what):
    """The picture at `path` as an RGB PIL image, or an InputError saying why it cannot be used."""
    try:
        return transformer.load_image(path)
    except transformer.TooLarge as error:
        raise InputError(f"{what} {path}: {error}, Pillow's against decompression bombs (the original's too)")
    except transformer.DAMAGED_PICTURE_ERRORS as error:
        raise InputError(f"{what} {path}: not an image that can be read ({one_line(error)})")


def check_min_side(width, height, what):
    if min(width, height) < net.MIN_SIDE:
        raise InputError(f"{what}: {width}x{height} is too small; the encoder needs at least "
                         f"{net.MIN_SIDE}x{net.MIN_SIDE} pixels")


def sized(image, size, crop, max_pixels, what):
    """An image as an array sized by the original's rules, or an InputError when too small or too large."""
    try:
        array = transformer.test_transform(image, size, crop, max_pixels)
    except transformer.TooLarge as error:
        raise InputError(f"{what}: {error} {RESIZED_TOO_LARGE}")
    except ValueError as error:  # a crop larger than the image
        raise InputError(f"{what}: {error}")
    check_min_side(array.shape[2], array.shape[1], what)
    return array


def style_arrays(paths, content_height, content_colours, args):
    """Style images sized by the original's rule (shorter side: --style_size, else the content's height),
    recoloured by CORAL with --preserve_color to `content_colours` (transformer.ColourStatistics)."""
    arrays = []
    for path in paths:
        image = read_picture(path, "--style")
        array = sized(image, transformer.style_side(content_height, args.style_size), args.crop, args.max_pixels,
                      f"style {path}")
        images_that_fit(*array.shape[1:], f"style {path}")
        arrays.append(transformer.coral(array, content_colours) if args.preserve_color else array)
    return arrays


def load_models(args):
    """The three networks; a missing default file gets the sentence on where to get the published ones."""
    try:
        return net.load_models(args.vgg_path, args.decoder_path, args.transform_path)
    except UserError as error:
        paths = (args.vgg_path, args.decoder_path, args.transform_path)
        if any(p in download_weights.DEFAULT_PATHS and not os.path.exists(p) for p in paths):
            raise UserError(f"{error}. This needs {download_weights.HOW_TO_GET}")
        raise


# ---------------------------------------------------------------- stylization

class Stylizer:
    """The networks with one style group's vectors: frames in, stylized frames out (uint8 HWC).

    With `half` the encoder and decoder are converted to float16 and get float16 images.
    """

    def __init__(self, models, alpha, interpolation_weights, half=False):
        self.vgg, self.decoder, self.mcc = models
        self.alpha = alpha
        self.interpolation_weights = interpolation_weights
        self.dtype = np.float16 if half else np.float32
        if half:
            self.vgg.float16()
            self.decoder.float16()
        self.vectors = None

    def set_styles(self, style_arrays_):
        with jt.no_grad():
            styles = [jt.array(s[None].astype(self.dtype)) for s in style_arrays_]
            vectors = net.style_vectors(self.vgg, self.mcc, styles)
            self.vectors = [jt.array(v.numpy()) for v in vectors]  # computed once, reused for every frame

    def __call__(self, frames):
        """Frames of one size (HWC uint8) → stylized frames of that size."""
        height, width = frames[0].shape[:2]
        batch = transformer.images_to_array(frames).astype(self.dtype, copy=False)
        with jt.no_grad():
            out = net.stylize(self.vgg, self.decoder, self.mcc, jt.array(batch), self.vectors,
                              self.alpha, self.interpolation_weights).float32().data
        # `data` is a view of Jittor's result, which `numpy()` would copy once more. The decoder answers at
        # the size rounded up to a multiple of 8: crop to the input's.
        return [transformer.array_to_image(o[:, :height, :width]) for o in out]


def save_image(array, path):
    """Write an image atomically (a half-written file never sits under the final name)."""
    write_atomically(path, transformer.image_bytes(array, os.path.splitext(path)[1]))


def frames_per_pass(height, width, wanted, what):
    """At most `wanted` frames per pass (None: the default, see PASS_PIXELS), fewer where Jittor's pooling would
    index past 2^31 numbers or where more would not fit in memory (`images_that_fit`)."""
    if wanted is None:
        wanted = max(1, min(DEFAULT_BATCH, PASS_PIXELS // (height * width)))
    count = net.images_per_pass(height, width, wanted)
    if count == 0:
        raise InputError(f"{what}: {width}x{height} is larger than Jittor can pool "
                         f"(at most {net.MAX_POOL_PIXELS:,} pixels); use --content_size")
    return min(count, images_that_fit(height, width, what))


def images_that_fit(height, width, what):
    """How many images of height × width a pass on the CPU can take in the memory this process may use (any number
    on a GPU), or an InputError where not one can: on the CPU, a 4K video on a machine of 8 GB left it short of
    memory until the kernel killed the run, without a word, minutes later."""
    if jt.flags.use_cuda:
        return math.inf
    available, in_words = backend.memory_of_this_process()
    count = int((available - PASS_BYTES) // (PASS_BYTES_PER_PIXEL * height * width))
    if count < 1:
        needed = PASS_BYTES + PASS_BYTES_PER_PIXEL * height * width
        raise InputError(f"{what}: {width}x{height} takes at least {needed / 1e9:.1f} GB of memory to stylize on the "
                         f"CPU, and this process may use {in_words} {RESIZED_TOO_LARGE}")
    return count


def stylize_image(content_path, style_paths, out_path, stylizer, args):
    image = read_picture(content_path, "--content")
    size = IMAGE_CONTENT_SIZE if args.content_size is None else args.content_size
    what = f"content {content_path}"
    content = transformer.array_to_image(sized(image, size, args.crop, args.max_pixels, what))
    frames_per_pass(*content.shape[:2], 1, what)  # refuses what Jittor cannot pool or memory cannot hold
    colours = transformer.ColourStatistics().add(content) if args.preserve_color else None
    stylizer.set_styles(style_arrays(style_paths, content.shape[0], colours, args))
    save_image(stylizer([content])[0], out_path)
    print(f"{content_path} -> {out_path}", file=sys.stderr)


@dataclass
class VideoResult:
    frames: int
    width: int
    height: int
    seconds: float
    problem: str  # why the input seems damaged (stylized as far as it decodes), or None
    notes: str  # what reading took besides decoding (VideoReader.notes), or None

    def summary(self):
        even = video.even_size(self.width, self.height)
        padded = "" if even == (self.width, self.height) else \
            f" (encoded at {even[0]}x{even[1]}: H.264 4:2:0 needs even sizes)"
        notes = f"; {self.notes}" if self.notes else ""
        return (f"{self.frames} frames {self.width}x{self.height}{padded} in {self.seconds:.1f} s "
                f"({self.frames / self.seconds:.2f} frames/s){notes}")


def stylize_video(content_path, style_paths, out_path, stylizer, args):
    """Decode → stylize a batch → encode, to the end of the video; returns what happened."""
    start = time.perf_counter()
    rate = args.frame_rate or video.DEFAULT_RATE
    what = f"content {content_path}"
    with contextlib.closing(video.open_video(content_path, rate)) as reader:
        frames = ((frame_at_content_size(frame, args, what), pts) for frame, pts in reader.frames())
        first = next(frames, None)
        if first is None:
            raise InputError(f"{content_path}: a video without any decodable frame ({reader.problem or 'empty'})")
        height, width = first[0].shape[:2]
        batch_size = frames_per_pass(height, width, args.batch_size, what)
        colours = video_colours(content_path, rate, args, what) if args.preserve_color else None
        stylizer.set_styles(style_arrays(style_paths, height, colours, args))
        frames_dir = os.path.splitext(out_path)[0] + "_frames" if args.save_frames else None
        sequence = video.is_image_sequence(content_path)  # its frames are saved under its pictures' names
        if frames_dir:
            os.makedirs(frames_dir, exist_ok=True)
        count = 0
        # Under mpirun one rank's progress bar is shown: the ranks' bars would overwrite each other's line.
        with atomic_output(out_path) as file, tqdm(total=reader.frames_expected or None, unit="frame",
                                                   desc=video.media_name(content_path), file=sys.stderr,
                                                   dynamic_ncols=True, disable=jt.rank > 0) as progress:
            writer = video.VideoWriter(file, reader, width, height)
            try:
                for batch in batched(itertools.chain([first], frames), batch_size):
                    for (_, pts), stylized in zip(batch, stylizer([frame for frame, _ in batch])):
                        writer.write_frame(stylized, pts)
                        if frames_dir:
                            name = reader.picture_name(pts) if sequence else f"{count:06d}"
                            save_image(stylized, os.path.join(frames_dir, name + args.save_ext))
                        count += 1
                    progress.update(len(batch))
                if reader.problem is None:  # read to its end: the frames a file announces may include hidden ones
                    progress.total = count
                writer.close()
            except BaseException:
                writer.abort()
                raise
        problem = "; ".join(p for p in (reader.problem, writer.audio_problem()) if p) or None
        return VideoResult(count, width, height, time.perf_counter() - start, problem, reader.notes())


def video_colours(content_path, rate, args, what):
    """The colours of all of a video's frames as they are stylized, for --preserve_color: a pass over the video
    before the one that stylizes it (a video's first frame alone may be black, a fade-in, or a title)."""
    colours = transformer.ColourStatistics()
    with contextlib.closing(video.open_video(content_path, rate)) as reader, \
            tqdm(total=reader.frames_expected or None, unit="frame", desc=f"{video.media_name(content_path)} colours",
                 file=sys.stderr, dynamic_ncols=True, disable=jt.rank > 0) as progress:
        for frame, _ in reader.frames():
            colours.add(frame_at_content_size(frame, args, what))
            progress.update()
    return colours


def frame_at_content_size(frame, args, what):
    """A decoded frame at --content_size (0 or None: as it is), centre-cropped to a square with --crop as a
    picture is (the original cropped only a video's style), checked against the size limits."""
    try:
        image = transformer.sized_image(Image.fromarray(frame), args.content_size or 0, args.crop,
                                        args.max_pixels)
    except transformer.TooLarge as error:
        raise InputError(f"{what}: {error} {RESIZED_TOO_LARGE}")
    check_min_side(*image.size, what)
    return np.asarray(image)


def batched(items, size):
    """Lists of `size` consecutive items (the last one shorter)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def stylize_pair(content_path, kind, style_paths, out_path, stylizer, args):
    """Stylize one content file with one style group into `out_path`; returns why a video seems damaged, or None."""
    fewer = ", or --batch_size 1" if kind == "video" else ""
    too_large = InputError(f"content {content_path}: too large, with its style, for the GPU's memory: use a smaller "
                           f"--content_size or --style_size{fewer}")
    with backend.gpu_memory_short_as(too_large):
        if kind == "image":
            stylize_image(content_path, style_paths, out_path, stylizer, args)
            return None
        result = stylize_video(content_path, style_paths, out_path, stylizer, args)
    print(f"{content_path} -> {out_path}: {result.summary()}", file=sys.stderr)
    if result.problem:
        print(f"WARNING: {content_path} is damaged: {result.frames} frames decoded ({result.problem})",
              file=sys.stderr)
    return result.problem


def make_outputs(outputs, stylizer, args, only_one):
    """Stylize every planned pair. An input that cannot be used costs its own outputs (a `skipping` line; the
    error itself where it is the run's only output); the run then ends with a UserError naming what is missing,
    and the damaged videos (stylized as far as they decode)."""
    not_made, damaged = [], []
    for (content_path, kind, group), out_path in outputs.items():
        try:
            problem = stylize_pair(content_path, kind, group, out_path, stylizer, args)
        except InputError as error:
            if only_one:
                raise
            print(f"skipping {out_path}: {error}", file=sys.stderr)
            not_made.append(out_path)
            continue
        if problem and content_path not in damaged:  # once, whatever the number of styles
            damaged.append(content_path)
    problems = [f"{len(not_made)} of {len(outputs)} output(s) not made: {', '.join(not_made)}"] if not_made else []
    if damaged:
        problems.append(f"{len(damaged)} damaged video(s), stylized as far as they decode: {', '.join(damaged)}")
    if problems:
        raise UserError("; ".join(problems))


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    backend.use_device(args.use_cuda)
    if args.half and not jt.flags.use_cuda:
        raise UserError("--half runs on the GPU only (Jittor has no fast float16 convolutions on the CPU); "
                        "without it the CPU computes in float32")
    contents = kinds_of(media_files(args.content, args.content_dir, "content"), "content",
                        from_folder=bool(args.content_dir))
    if args.frame_rate is not None and not any(video.is_image_sequence(path) for path, _ in contents):
        raise UserError("--frame_rate times an image sequence (--content frames/%05d.png); a video file keeps its own")
    groups, weights_ = style_groups(args)
    writable_folder(args.output, "output")
    outputs = plan_outputs(contents, groups, args)
    mine = share_of_this_rank(outputs)
    if args.skip_existing:
        mine = without_existing(mine)
    if not mine:  # all made before (--skip_existing), or more ranks than outputs
        return
    stylizer = Stylizer(load_models(args), args.alpha, weights_, args.half)
    # Under mpirun every rank has met the same errors so far (one line reports them); each now makes its own
    # outputs, which one rank's unusable input must not end.
    ranks_work_apart()
    make_outputs(mine, stylizer, args, only_one=len(outputs) == 1)


if __name__ == "__main__":
    run(main, coupled_ranks=True)
