"""Speed of our Jittor MCCNet against the PyTorch oracle, in one run on one machine.

Prints a markdown table of median latencies and Jittor/PyTorch ratios for a 256 × 256 and
a 512 × 512 stylization: the original's procedure (relu5_1 and the content-content pass
computed, as its test script does) and the lean one (`net.style_transfer`, which skips
what alpha = 1 does not need), on the CPU and, when both frameworks have CUDA, on the GPU.
Also: one Jittor run without oneDNN (why `jittor-offline` is a requirement) and the time
of a first `import net` on a warm Jittor cache.

The video part stylizes a 640 × 360 clip with `test_video.py`'s pipeline and with the
original's per-frame procedure (style re-read, resized and encoded for every frame, relu5_1
and the content-content pass computed, batch 1) in the PyTorch oracle, compares whole-video
frames/s with model-only frames/s (I/O overhead), and the peak memory of a clip with its
10 × longer version, and times evaluate.py on the stylized clip (at its default
--feature_every, and at 1: every frame). The training part times one optimisation step
(batch 2, 128 × 128) in both frameworks, taking turns, and the data loader's batches per
second. Weights are random: speed does not depend on their values.
Needs PyTorch (requirements-dev.txt).

    python bench.py                 # everything, about 14 minutes on 2 cores, ending with a summary table
    python bench.py --only video    # or --only image, --only train
"""
import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import backend
import jittor as jt
import net

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.join(HERE, "tests"))  # after HERE: tests/test_video.py must not shadow ours

import torch  # noqa: E402  (after our Jittor start-up; the oracle needs it)
import torch_mccnet as tm  # noqa: E402
from clips import make_clip  # noqa: E402
import evaluate  # noqa: E402
import sampler  # noqa: E402
import test_video  # noqa: E402
import train  # noqa: E402
import transformer  # noqa: E402
import video  # noqa: E402

SIZES = (256, 512)
VIDEO_SIZE = (640, 360)
VIDEO_FRAMES = 8
MEMORY_SIZE = (160, 96)  # small frames: the memory test is about the clip's length
MEMORY_FRAMES = 20
TRAIN_BATCH, TRAIN_SIZE = 2, 128
LOADER_THREADS, LOADER_IMAGES = 2, 32
NO_ONEDNN_SIZE = 64  # without oneDNN a 256 × 256 pass takes minutes


def median_seconds(run, warmup, repeat):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(torch_run, jittor_run, warmup, repeat):
    """Median wall-clock and process-CPU seconds of each, the two run in turns.

    Taking turns exposes both to the same drift in the load of a shared machine; CPU time
    (all threads of this process) is the steadier figure when other jobs steal cores.
    """
    for _ in range(warmup):
        torch_run()
        jittor_run()
    times = {"torch": ([], []), "jittor": ([], [])}
    for _ in range(repeat):
        for name, run in (("torch", torch_run), ("jittor", jittor_run)):
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in times.items()}


def jittor_original_procedure(vgg, decoder, mcc, content, style):
    """What the original test script computes at alpha = 1: relu3_1..relu5_1 and mcc(c, c) too."""
    slices = net.encoder_slices(vgg)

    def encode(x):
        feats = []
        for enc in slices:
            x = enc(x)
            feats.append(x)
        return feats[2:]
    content_feats, style_feats = encode(content), encode(style)
    fccc = mcc(content_feats, content_feats)
    feat = 1.0 * mcc(content_feats, style_feats) + 0.0 * fccc
    return decoder(feat)


def torch_lean_procedure(vgg, decoder, mcc, content, style):
    return decoder(mcc.MCCN(vgg[:31](content), vgg[:31](style)))


def jittor_runner(procedure, models, content, style):
    def run():
        with jt.no_grad():
            procedure(*models, jt.array(content), jt.array(style)).numpy()
    return run


def torch_runner(procedure, models, content, style, device):
    def run():
        with torch.no_grad():
            out = procedure(*models, torch.from_numpy(content).to(device), torch.from_numpy(style).to(device))
            out.cpu().numpy()
    return run


def torch_original_procedure(vgg, decoder, mcc, content, style):
    return tm.style_transfer(vgg, decoder, mcc, content, [style], alpha=1.0)


def jittor_lean_procedure(vgg, decoder, mcc, content, style):
    return net.style_transfer(vgg, decoder, mcc, content, [style])


def load_jittor(oracle):
    models = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    for model, reference in zip(models, oracle):
        model.load_parameters({k: v.numpy() for k, v in reference.state_dict().items()})
    return models


def measure_device(device, oracle, repeat):
    """Rows (procedure, size, pytorch_s, jittor_s) on 'cpu' or 'cuda'."""
    backend.use_device("1" if device == "cuda" else "0")
    jmodels = load_jittor(oracle)
    tmodels = [m.to(device) for m in oracle]
    rows = []
    rng = np.random.default_rng(0)
    for size in SIZES:
        content, style = rng.random((2, 1, 3, size, size), dtype=np.float32)
        n = repeat if size <= 256 else max(3, repeat // 2)
        for name, tproc, jproc in (("original procedure", torch_original_procedure, jittor_original_procedure),
                                   ("lean (alpha = 1)", torch_lean_procedure, jittor_lean_procedure)):
            medians = interleaved_medians(torch_runner(tproc, tmodels, content, style, device),
                                          jittor_runner(jproc, jmodels, content, style), 2, n)
            t, j = medians["torch"][0], medians["jittor"][0]
            rows.append((f"{device.upper()} {name}", size, t, j))
            print(f"  {rows[-1][0]} {size}: PyTorch {t:.3f} s, Jittor {j:.3f} s", file=sys.stderr, flush=True)
    return rows


def jittor_without_onednn_seconds():
    """A small stylization in a child process whose Jittor has oneDNN switched off."""
    env = dict(os.environ, use_mkl="0")
    child = subprocess.run([sys.executable, __file__, "--no-onednn-child"], env=env, cwd=HERE,
                           capture_output=True, text=True)
    if child.returncode != 0:
        return None
    return json.loads(child.stdout.strip().splitlines()[-1])["seconds"]


def no_onednn_child():
    rng = np.random.default_rng(0)
    content, style = rng.random((2, 1, 3, NO_ONEDNN_SIZE, NO_ONEDNN_SIZE), dtype=np.float32)
    models = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    seconds = median_seconds(jittor_runner(jittor_lean_procedure, models, content, style), 1, 1)
    print(json.dumps({"seconds": seconds}))


def import_seconds():
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import net"], cwd=HERE, check=True, capture_output=True)
    return time.perf_counter() - start


def machine_description():
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"Jittor {jt.__version__}, PyTorch {torch.__version__}, {torch.get_num_threads()} PyTorch threads")


def jittor_with_onednn_seconds(oracle):
    backend.use_device("0")
    rng = np.random.default_rng(0)
    content, style = rng.random((2, 1, 3, NO_ONEDNN_SIZE, NO_ONEDNN_SIZE), dtype=np.float32)
    return median_seconds(jittor_runner(jittor_lean_procedure, load_jittor(oracle), content, style), 1, 3)


def print_table(rows, onednn, no_onednn, import_s):
    print("| stylization | size | PyTorch (s) | Jittor (s) | Jittor / PyTorch |")
    print("|---|---|---|---|---|")
    for name, size, t, j in rows:
        print(f"| {name} | {size}×{size} | {t:.3f} | {j:.3f} | {j / t:.2f} |")
    original = {(n.split()[0], s): j for n, s, _, j in rows if "original" in n}
    for name, size, t, j in rows:
        if "lean" in name:
            print(f"\nLean vs original procedure, Jittor {name.split()[0]} {size}×{size}: "
                  f"{j / original[(name.split()[0], size)]:.2f}× the time", end="")
    print("\n")
    if no_onednn is not None:
        print(f"Jittor CPU lean {NO_ONEDNN_SIZE}×{NO_ONEDNN_SIZE}: {onednn:.3f} s with oneDNN, "
              f"{no_onednn:.2f} s without it (use_mkl=0): {no_onednn / onednn:.0f}× slower")
    print(f"First `import net` on a warm Jittor cache: {import_s:.1f} s")


# ---------------------------------------------------------------- video

def write_video_inputs(folder, oracle):
    """A 360p clip, a style image, and the oracle's weights as .pth files."""
    clip = os.path.join(folder, "clip.mp4")
    make_clip(clip, *VIDEO_SIZE, frames=VIDEO_FRAMES)
    style = os.path.join(folder, "style.jpg")
    rng = np.random.default_rng(1)
    from PIL import Image
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(style)
    paths = [os.path.join(folder, n) for n in ("vgg.pth", "decoder.pth", "mcc.pth")]
    for module, path in zip(oracle, paths):
        torch.save(module.state_dict(), path)
    return clip, style, paths


def decoded_frames(clip):
    with video.VideoReader(clip) as reader:
        return [item[1] for item in reader.packets_and_frames() if item[0] == "video"]


def original_per_frame_fps(oracle, frames, style_path):
    """The original test_video.py's loop, in the PyTorch oracle: style work redone every frame."""
    vgg, decoder, mcc = oracle
    start = time.perf_counter()
    for frame in frames:
        style_image = transformer.resize_shorter_side(transformer.load_image(style_path), frame.shape[0])
        style = torch.from_numpy(transformer.image_to_array(style_image)[None])
        content = torch.from_numpy(transformer.image_to_array(frame)[None])
        with torch.no_grad():
            out = tm.style_transfer(vgg, decoder, mcc, content, [style], alpha=1.0)
        transformer.array_to_image(out[0].numpy())
    return len(frames) / (time.perf_counter() - start)


def pipeline_args(clip, style, weight_paths, output, batch_size):
    return test_video.parse_args(["--content", clip, "--style", style, "--output", output,
                                  "--vgg_path", weight_paths[0], "--decoder_path", weight_paths[1],
                                  "--transform_path", weight_paths[2], "--batch_size", str(batch_size)])


def our_video_fps(args):
    """test_video.py's whole pipeline, file to file (weights loaded beforehand)."""
    stylizer = test_video.Stylizer(test_video.load_models(args), args.alpha, None)
    start = time.perf_counter()
    test_video.stylize_video(args.content, [args.style], stylizer, args)
    return VIDEO_FRAMES / (time.perf_counter() - start), stylizer


def model_only_fps(stylizer, frames, batch_size):
    start = time.perf_counter()
    for i in range(0, len(frames), batch_size):
        stylizer(frames[i:i + batch_size])
    return len(frames) / (time.perf_counter() - start)


def evaluation_fps(clip, stylized, style, vgg_path, output, feature_every):
    """evaluate.py on the stylized clip, file to report, timed on its second run (the first compiles)."""
    arguments = ["--content", clip, "--stylized", stylized, "--style", style, "--vgg", vgg_path, "--output", output,
                 "--feature_every", str(feature_every)]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluate.main(arguments)
        start = time.perf_counter()
        evaluate.main(arguments)
    return VIDEO_FRAMES / (time.perf_counter() - start)


def peak_rss_mb(command):
    """Peak resident memory of a child process, in MB."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True)
    return int(result.stdout.strip()) / 1024


def memory_rows(folder, style, weight_paths):
    rows = []
    for frames in (MEMORY_FRAMES, 10 * MEMORY_FRAMES):
        clip = os.path.join(folder, f"memory_{frames}.mp4")
        make_clip(clip, *MEMORY_SIZE, frames=frames)
        command = [sys.executable, os.path.join(HERE, "test_video.py"), "--content", clip, "--style", style,
                   "--output", os.path.join(folder, "memory_out"), "--vgg_path", weight_paths[0],
                   "--decoder_path", weight_paths[1], "--transform_path", weight_paths[2]]
        rows.append((frames, peak_rss_mb(command)))
    return rows


def measure_video(oracle, batch_size=4):
    backend.use_device("0")
    with tempfile.TemporaryDirectory() as folder:
        clip, style, weight_paths = write_video_inputs(folder, oracle)
        frames = decoded_frames(clip)
        args = pipeline_args(clip, style, weight_paths, os.path.join(folder, "out"), batch_size)
        os.makedirs(args.output, exist_ok=True)
        our_video_fps(args)  # warm-up: Jittor compiles its operators for this frame size
        ours, stylizer = our_video_fps(args)
        model_only = model_only_fps(stylizer, frames, batch_size)
        original_per_frame_fps(oracle, frames[:1], style)  # warm-up
        original = original_per_frame_fps(oracle, frames, style)
        stylized = os.path.join(args.output, test_video.output_name(clip, [style], ".mp4"))
        evaluation = {every: evaluation_fps(clip, stylized, style, weight_paths[0], os.path.join(folder, "evaluation"),
                                            every) for every in (evaluate.FEATURE_EVERY, 1)}
        memory = memory_rows(folder, style, weight_paths)
    return dict(ours=ours, model_only=model_only, original=original, memory=memory, batch_size=batch_size,
                evaluation=evaluation)


def print_video_table(result):
    width, height = VIDEO_SIZE
    print(f"Video, {width}×{height}, {VIDEO_FRAMES} frames, CPU:\n")
    print("| procedure | frames/s | vs original |")
    print("|---|---|---|")
    print(f"| original per-frame procedure, PyTorch (batch 1) | {result['original']:.3f} | 1.00 |")
    print(f"| test_video.py, whole video, file to file (batch {result['batch_size']}) | {result['ours']:.3f} | "
          f"{result['ours'] / result['original']:.2f} |")
    print(f"| test_video.py's model alone, decoded frames in memory | {result['model_only']:.3f} | "
          f"{result['model_only'] / result['original']:.2f} |")
    print(f"\nWhole-video / model-only frames/s: {result['ours'] / result['model_only']:.2f}")
    for every, fps in result["evaluation"].items():
        print(f"evaluate.py on the stylized clip (with --style, --feature_every {every}): {fps:.3f} frames/s: "
              f"{result['ours'] / fps:.2f}× the time test_video.py takes to make it, "
              f"{result['original'] / fps:.2f}× the time of the original per-frame procedure")
    (short, short_mb), (long, long_mb) = result["memory"]
    print(f"Peak memory of test_video.py, {MEMORY_SIZE[0]}×{MEMORY_SIZE[1]}: {short} frames {short_mb:.0f} MB, "
          f"{long} frames {long_mb:.0f} MB ({long_mb / short_mb:.2f}×)")


# ---------------------------------------------------------------- training

def torch_step_runner(oracle_seed, content, style, noise):
    vgg, decoder, mcc = tm.seeded_weights(oracle_seed)
    network = tm.Net(vgg, decoder, mcc)
    optimizer = torch.optim.Adam(list(decoder.parameters()) + list(mcc.parameters()), lr=1e-4)
    tensors = [torch.from_numpy(a) for a in (content, style, noise)]

    def run():
        optimizer.zero_grad()
        tm.total_loss(network(*tensors)).backward()
        optimizer.step()
    return run


def jittor_step_runner(oracle, content, style, noise):
    vgg, decoder, mcc = load_jittor(oracle)
    network = net.Net(vgg, decoder, mcc)
    optimizer = net.Adam(list(decoder.parameters()) + list(mcc.parameters()), lr=1e-4)
    args = train.parse_args(["--content_dir", ".", "--style_dir", "."])
    content, style = jt.array(content), jt.array(style)

    def run():
        train.train_step(network, optimizer, content, style, noise, args)  # reads the losses: synchronises
    return run


def loader_batches_per_second(folder, n_batches):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(LOADER_IMAGES):
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.jpg"))
    data = sampler.InfiniteImageFolder(folder, TRAIN_BATCH, (n_batches + 2) * TRAIN_BATCH, n_threads=LOADER_THREADS,
                                       crop=TRAIN_SIZE)
    batches = iter(data)
    next(batches), next(batches)  # workers started
    start = time.perf_counter()
    for _ in range(n_batches):
        next(batches).numpy()
    seconds = time.perf_counter() - start
    data.terminate()  # the workers read ahead: stop them before their folder is deleted
    return n_batches / seconds


def measure_training(oracle, repeat):
    backend.use_device("0")
    rng = np.random.default_rng(0)
    content, style = rng.random((2, TRAIN_BATCH, 3, TRAIN_SIZE, TRAIN_SIZE), dtype=np.float32)
    noise = (rng.standard_normal(content.shape) * 0.015).astype(np.float32)
    medians = interleaved_medians(torch_step_runner(0, content, style, noise),
                                  jittor_step_runner(oracle, content, style, noise), 2, repeat)
    with tempfile.TemporaryDirectory() as folder:
        loader = loader_batches_per_second(folder, 20)
    return dict(torch=medians["torch"][0], jittor=medians["jittor"][0],
                torch_cpu=medians["torch"][1], jittor_cpu=medians["jittor"][1], loader=loader)


def print_training_table(result):
    print(f"\nTraining step, batch {TRAIN_BATCH}, {TRAIN_SIZE}×{TRAIN_SIZE}, decoder + MCC, Adam, CPU:\n")
    print("| median per step | PyTorch (s) | Jittor (s) | Jittor / PyTorch |")
    print("|---|---|---|---|")
    print(f"| wall clock | {result['torch']:.3f} | {result['jittor']:.3f} | {result['jittor'] / result['torch']:.2f} |")
    print(f"| CPU time, all threads | {result['torch_cpu']:.3f} | {result['jittor_cpu']:.3f} | "
          f"{result['jittor_cpu'] / result['torch_cpu']:.2f} |")
    steps_per_s = 1 / result["jittor"]
    print(f"\nData loader, --n_threads {LOADER_THREADS}, 640×480 JPEGs: {result['loader']:.1f} batches/s, "
          f"{result['loader'] / steps_per_s:.1f}× what the Jittor step consumes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("image", "video", "train"), help="run one part of the benchmark")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per image case at 256×256 (half at 512)")
    parser.add_argument("--no-onednn-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_onednn_child:
        return no_onednn_child()
    torch.set_num_threads(os.cpu_count())
    oracle = tm.seeded_weights(seed=0)
    print(f"Machine: {machine_description()}\n")
    rows = video_result = training_result = None
    if args.only in (None, "image"):
        rows = measure_device("cpu", oracle, args.repeat)
        if jt.has_cuda and torch.cuda.is_available():
            rows += measure_device("cuda", oracle, args.repeat)
        print_table(rows, jittor_with_onednn_seconds(oracle), jittor_without_onednn_seconds(), import_seconds())
    if args.only in (None, "video"):
        video_result = measure_video(oracle)
        print_video_table(video_result)
    if args.only in (None, "train"):
        training_result = measure_training(oracle, args.repeat)
        print_training_table(training_result)
    if args.only is None:
        print_summary(rows, video_result, training_result)


def print_summary(image_rows, video_result, training_result):
    """The headline figures of the run above in one table, every one against PyTorch on this machine."""
    print("\nSummary (this run, this machine):\n")
    print("| time of | PyTorch | Jittor (ours) | ours / PyTorch |")
    print("|---|---|---|---|")
    pytorch_original = {size: t for name, size, t, _ in image_rows if name.startswith("CPU original")}
    for name, size, t, j in image_rows:
        if name.startswith("CPU original"):
            print(f"| image {size}×{size}, the original procedure in both, s | {t:.3f} | {j:.3f} | {j / t:.2f} |")
        elif name.startswith("CPU lean"):
            t = pytorch_original[size]
            print(f"| image {size}×{size}, PyTorch's original procedure vs our lean path, s | {t:.3f} | {j:.3f} | "
                  f"{j / t:.2f} |")
    width, height = VIDEO_SIZE
    print(f"| video {width}×{height}, s per frame (original per-frame procedure vs test_video.py) | "
          f"{1 / video_result['original']:.3f} | {1 / video_result['ours']:.3f} | "
          f"{video_result['original'] / video_result['ours']:.2f} |")
    print(f"| training step, batch {TRAIN_BATCH}, {TRAIN_SIZE}×{TRAIN_SIZE}, s | {training_result['torch']:.3f} | "
          f"{training_result['jittor']:.3f} | {training_result['jittor'] / training_result['torch']:.2f} |")


if __name__ == "__main__":
    main()
