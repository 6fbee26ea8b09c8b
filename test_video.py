"""Stylize videos and images with MCCNet.

    python test_video.py --video input/videos/clip.mp4 --style input/style/painting.jpg

Every content × style pair is produced as `<content>_stylized_<style>` in --output: an
H.264/MP4 with the input's size, frame timestamps and sound for a video, a --save_ext
image for an image. The style is read, resized and encoded once per pair (the original
re-did it for every frame); frames go through the network in batches while decoding and
encoding run in background threads; memory does not grow with the video's length.
"""
import argparse
import os
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

import backend
import jittor as jt
import net
import transformer
import video
import weights
from cli import UserError, run, writable_folder

IMAGE_CONTENT_SIZE = 512  # the original's image default; videos keep their size
WEIGHTS_HELP = ("the published weights: vgg_normalised.pth (pytorch-AdaIN's release assets, or the link in "
                "MCCNet's README), decoder_iter_160000.pth and mcc_module_iter_160000.pth (the root of "
                "github.com/diyiiyiii/MCCNet, branch main), placed in experiments/")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    content = parser.add_argument_group("content (one of)")
    content.add_argument("--content", "--video", dest="content",
                         help="a content image or video file (any format FFmpeg or PIL reads, recognised "
                              "by its content); several, comma-separated, are each stylized")
    content.add_argument("--content_dir", help="a folder of content images and videos")
    style = parser.add_argument_group("style (one of)")
    style.add_argument("--style", help="a style image; several, comma-separated, are blended with "
                                       "--style_interpolation_weights (or each used in turn without)")
    style.add_argument("--style_dir", help="a folder of style images, each used in turn")
    parser.add_argument("--style_interpolation_weights",
                        help="comma-separated weights, one per --style, to blend the styles into one")
    parser.add_argument("--output", default="output", help="folder for the results (default: output)")
    parser.add_argument("--vgg_path", default="experiments/vgg_normalised.pth", help="encoder weights (.pth or .pkl)")
    parser.add_argument("--decoder_path", default="experiments/decoder_iter_160000.pth",
                        help="decoder weights (.pth or .pkl)")
    parser.add_argument("--transform_path", default="experiments/mcc_module_iter_160000.pth",
                        help="MCC module weights (.pth or .pkl)")
    parser.add_argument("--a", "--alpha", dest="alpha", type=float, default=1.0,
                        help="style strength in [0, 1]: 1 is full style, 0 reconstructs the content")
    parser.add_argument("--preserve_color", action="store_true",
                        help="keep the content's colours (CORAL on the style image; for a video, "
                             "against its first frame)")
    parser.add_argument("--content_size", type=int, default=None,
                        help="resize content so its shorter side is this; 0 keeps it (default: 512 for "
                             "images and 0 for videos, as the original)")
    parser.add_argument("--style_size", type=int, default=None,
                        help="resize the style so its shorter side is this; 0 keeps it (default: the "
                             "content's height, as the original)")
    parser.add_argument("--crop", action="store_true", help="centre-crop content and style to squares of their size")
    parser.add_argument("--save_ext", default=".jpg", choices=(".jpg", ".png"),
                        help="image format of stylized images and --save_frames (.png is lossless)")
    parser.add_argument("--batch_size", type=int, default=4, help="video frames per forward pass (default 4)")
    parser.add_argument("--save_frames", action="store_true",
                        help="also write each stylized video frame as an image in <output>/<name>_frames/")
    backend.add_device_argument(parser)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- inputs

def media_files(path, folder, what):
    """The files named by --X (comma-separated) or found in --X_dir, checked to exist."""
    if bool(path) == bool(folder):
        raise UserError(f"give either --{what} or --{what}_dir")
    if folder:
        if not os.path.isdir(folder):
            raise UserError(f"--{what}_dir {folder}: no such folder")
        files = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                       if not name.startswith(".") and os.path.isfile(os.path.join(folder, name)))
        if not files:
            raise UserError(f"--{what}_dir {folder}: holds no files")
        return files
    files = [p for p in path.split(",") if p]
    for file in files:
        if not os.path.isfile(file):
            raise UserError(f"--{what} {file}: no such file")
    return files


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
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise UserError("--style_interpolation_weights must be non-negative with a positive sum")
    return values


def style_sets(args):
    """A list of style groups: one group of several styles when interpolating, else one group per style."""
    files = media_files(args.style, args.style_dir, "style")
    styles = kinds_of(files, "style", from_folder=bool(args.style_dir))
    for path, kind in styles:
        if kind != "image":
            raise UserError(f"--style {path}: a style must be an image, not a video")
    paths = [p for p, _ in styles]
    weights_ = interpolation_weights(args.style_interpolation_weights, len(paths))
    return ([paths], weights_) if weights_ else ([[p] for p in paths], None)


def check_args(args):
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: must be within [0, 1]")
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size}: must be at least 1")
    for flag in ("content_size", "style_size"):
        value = getattr(args, flag)
        if value is not None and value != 0 and value < net.MIN_SIDE:
            raise UserError(f"--{flag} {value}: must be 0 (keep) or at least {net.MIN_SIDE}")


def check_size(width, height, what):
    if min(width, height) < net.MIN_SIDE:
        raise UserError(f"{what}: {width}x{height} is too small; the encoder needs at least "
                        f"{net.MIN_SIDE}x{net.MIN_SIDE} pixels")


def load_models(args):
    models = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    for model, path, what in zip(models, (args.vgg_path, args.decoder_path, args.transform_path),
                                 ("the VGG encoder", "the decoder", "the MCC module")):
        try:
            weights.load_weights(model, path, what)
        except UserError as error:
            raise UserError(f"{error}. This needs {WEIGHTS_HELP}")
    return models


# ---------------------------------------------------------------- stylization

class Stylizer:
    """The networks with one style group's vectors: frames in, stylized frames out (uint8 HWC)."""

    def __init__(self, models, alpha, interpolation_weights):
        self.vgg, self.decoder, self.mcc = models
        self.alpha = alpha
        self.interpolation_weights = interpolation_weights
        self.vectors = None

    def set_styles(self, style_arrays):
        with jt.no_grad():
            vectors = net.style_vectors(self.vgg, self.mcc, [jt.array(s[None]) for s in style_arrays])
            self.vectors = [jt.array(v.numpy()) for v in vectors]  # computed once, reused for every frame

    def __call__(self, frames):
        """Frames of one size (HWC uint8) → stylized frames of that size."""
        height, width = frames[0].shape[:2]
        batch = np.stack([transformer.image_to_array(f) for f in frames])
        with jt.no_grad():
            out = net.stylize(self.vgg, self.decoder, self.mcc, jt.array(batch), self.vectors,
                              self.alpha, self.interpolation_weights).numpy()
        # The decoder answers at the size rounded up to a multiple of 8: crop to the input's.
        return [transformer.array_to_image(o[:, :height, :width]) for o in out]


def load_styles(paths, args, height, content_colours):
    """Style images as arrays: shorter side to --style_size (default: the content height), CORAL if asked."""
    size = height if args.style_size is None else args.style_size
    arrays = []
    for path in paths:
        image = transformer.load_image(path)
        check_size(*image.size, f"style {path}")
        array = transformer.test_transform(image, size, args.crop)
        if args.preserve_color:
            array = transformer.coral(array, content_colours)
        arrays.append(array)
    return arrays


def output_name(content_path, style_paths, extension):
    stem = os.path.splitext(os.path.basename(content_path))[0]
    styles = "_".join(os.path.splitext(os.path.basename(p))[0] for p in style_paths)
    return f"{stem}_stylized_{styles}{extension}"


def temporary_path(final_path):
    """A hidden name beside the final one: renamed into place only when the file is complete."""
    folder, name = os.path.split(final_path)
    return os.path.join(folder, f".{name}.part{os.path.splitext(name)[1]}")


def save_image(array, path):
    """Write an image atomically (a half-written file never sits under the final name)."""
    weights.write_atomically(path, transformer.image_bytes(array, os.path.splitext(path)[1]))


def stylize_image(content_path, style_paths, stylizer, args):
    image = transformer.load_image(content_path)
    size = IMAGE_CONTENT_SIZE if args.content_size is None else args.content_size
    content = transformer.array_to_image(transformer.test_transform(image, size, args.crop))
    check_size(content.shape[1], content.shape[0], f"content {content_path}")
    stylizer.set_styles(load_styles(style_paths, args, content.shape[0], transformer.image_to_array(content)))
    out_path = os.path.join(args.output, output_name(content_path, style_paths, args.save_ext))
    save_image(stylizer([content])[0], out_path)
    print(f"{content_path} -> {out_path}", file=sys.stderr)


class Prefetch:
    """Runs an iterator in a background thread, up to `size` items ahead, so that decoding
    overlaps compute. Leaving the `with` block stops and joins the thread, so that it never
    outlives the file it reads."""

    _DONE = object()

    def __init__(self, iterable, size):
        self.items = queue.Queue(size)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, args=(iterable,), daemon=True)

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, iterable):
        try:
            for item in iterable:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as error:  # noqa: BLE001 -- handed to the consumer, re-raised there
            self._put(error)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def __iter__(self):
        while (item := self.items.get()) is not self._DONE:
            if isinstance(item, BaseException):
                raise item
            yield item


class OrderedBackgroundWork:
    """Runs calls one at a time, in order, in a background thread, with at most `depth` pending."""

    def __init__(self, depth):
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.pending = deque()
        self.depth = depth

    def submit(self, fn, *args):
        self.pending.append(self.executor.submit(fn, *args))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()  # re-raises the writer's error here

    def finish(self):
        while self.pending:
            self.pending.popleft().result()
        self.executor.shutdown()

    def cancel(self):
        for future in self.pending:
            future.cancel()
        self.executor.shutdown(wait=True)


def resize_frame(frame, size):
    if not size:
        return frame
    return np.asarray(transformer.resize_shorter_side(Image.fromarray(frame), size))


def first_frame(path, size):
    with video.VideoReader(path) as reader:
        for item in reader.packets_and_frames():
            if item[0] == "video":
                return resize_frame(item[1], size)
        raise UserError(f"{path}: a video without any decodable frame"
                        + (f" ({reader.error})" if reader.error else ""))


def stylize_video(content_path, style_paths, stylizer, args):
    size = args.content_size or 0
    frame0 = first_frame(content_path, size)
    height, width = frame0.shape[:2]
    check_size(width, height, f"content {content_path}")
    stylizer.set_styles(load_styles(style_paths, args, height, transformer.image_to_array(frame0)))
    out_path = os.path.join(args.output, output_name(content_path, style_paths, ".mp4"))
    frames_dir = os.path.splitext(out_path)[0] + "_frames" if args.save_frames else None
    if frames_dir:
        os.makedirs(frames_dir, exist_ok=True)
    tmp_path = temporary_path(out_path)
    start = time.perf_counter()
    with video.VideoReader(content_path) as reader:
        writer = video.VideoWriter(tmp_path, reader, width, height)
        background = OrderedBackgroundWork(depth=2 * args.batch_size)
        try:
            count = run_video_pipeline(reader, writer, stylizer, background, args, frames_dir, size, content_path)
            background.finish()
            writer.close()
            os.replace(tmp_path, out_path)
        except BaseException:
            background.cancel()
            writer.abort()
            raise
        finally:
            if os.path.exists(tmp_path):
                os.unlink(tmp_path)
    seconds = time.perf_counter() - start
    even = video.even_size(width, height)
    padded = f" (encoded at {even[0]}x{even[1]}: H.264 4:2:0 needs even sizes)" if even != (width, height) else ""
    print(f"{content_path} -> {out_path}: {count} frames {width}x{height}{padded} in {seconds:.1f} s "
          f"({count / seconds:.2f} frames/s)", file=sys.stderr)
    if reader.error:
        print(f"WARNING: {content_path} is damaged: decoding stopped after {count} frames ({reader.error})",
              file=sys.stderr)
    return reader.error is not None


def run_video_pipeline(reader, writer, stylizer, background, args, frames_dir, size, content_path):
    """Decode (background) → stylize in batches (here) → encode and mux (background)."""
    count = 0
    batch, stamps = [], []
    progress = tqdm(total=reader.frames_expected or None, unit="frame", desc=os.path.basename(content_path),
                    file=sys.stderr, dynamic_ncols=True)

    def flush():
        nonlocal count
        for frame, pts in zip(stylizer(batch), stamps):
            background.submit(writer.write_frame, frame, pts)
            if frames_dir:
                background.submit(save_image, frame, os.path.join(frames_dir, f"{count:06d}{args.save_ext}"))
            count += 1
        progress.update(len(batch))
        batch.clear()
        stamps.clear()

    with progress, Prefetch(reader.packets_and_frames(), 4 * args.batch_size) as decoded:
        for item in decoded:
            if item[0] == "audio":
                background.submit(writer.write_audio, item[1])
                continue
            batch.append(resize_frame(item[1], size))
            stamps.append(item[2])
            if len(batch) == args.batch_size:
                flush()
        if batch:
            flush()
    if count == 0:
        raise UserError(f"{content_path}: no frame could be decoded ({reader.error})")
    return count


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    backend.use_device(args.use_cuda)
    contents = kinds_of(media_files(args.content, args.content_dir, "content"), "content",
                        from_folder=bool(args.content_dir))
    groups, weights_ = style_sets(args)
    writable_folder(args.output, "output")
    stylizer = Stylizer(load_models(args), args.alpha, weights_)
    damaged = set()
    for content_path, kind in contents:
        for style_paths in groups:
            if kind == "video":
                if stylize_video(content_path, style_paths, stylizer, args):
                    damaged.add(content_path)
            else:
                stylize_image(content_path, style_paths, stylizer, args)
    if damaged:
        raise UserError(f"{len(damaged)} damaged video(s), stylized as far as they decode: {', '.join(sorted(damaged))}")


if __name__ == "__main__":
    run(main)
