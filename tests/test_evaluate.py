"""evaluate.py: the metrics on synthetic videos with known answers, the report end to end,
and every bad input it must survive."""
import json
import os
import re

import cv2
import numpy as np
import pytest
from PIL import Image

import evaluate
from clips import make_clip, remuxed, shifted
import cli
from cli import UserError
import test_video
import video
from conftest import JITTOR_GPU_MEMORY_ERROR, mpirun, needs_mpi, run_script

SHIFT = (2, 1)  # the synthetic camera pan, pixels per frame (dx, dy)


def texture(seed=0, size=(200, 240)):
    """A smooth random colour texture (optical flow needs structure at several scales)."""
    noise = np.random.default_rng(seed).random((size[0], size[1], 3), dtype=np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def panned_frames(n=5, height=96, width=128):
    """A window moving over the texture by SHIFT per frame: content moves by −SHIFT."""
    canvas = texture()
    return [canvas[10 + SHIFT[1] * t:10 + SHIFT[1] * t + height, 10 + SHIFT[0] * t:10 + SHIFT[0] * t + width].copy()
            for t in range(n)]


def colour_map(frame):
    """A per-pixel stylization: a fixed nonlinear map of each pixel's colour."""
    lut = (255 * (np.arange(256) / 255) ** 0.5).astype(np.uint8)
    return 255 - lut[frame[..., ::-1]]


def mean_warping_error(inputs, stylized):
    errors = []
    for t in range(1, len(inputs)):
        backward, forward = evaluate.optical_flows(inputs[t - 1], inputs[t])
        mask = evaluate.valid_mask(backward, forward)
        errors.append(evaluate.warping_error(stylized[t - 1], stylized[t], backward, mask))
    return float(np.mean(errors))


def test_dis_flow_finds_the_pan():
    frames = panned_frames(2)
    backward, forward = evaluate.optical_flows(*frames)
    inner = (slice(8, -8), slice(8, -8))
    # frame 1 at x shows frame 0 at x + SHIFT
    assert np.abs(backward[inner] - SHIFT).mean() < 0.05
    assert np.abs(forward[inner] + SHIFT).mean() < 0.05


def test_warping_error_of_a_per_pixel_colour_map_is_near_zero():
    frames = panned_frames()
    error = mean_warping_error(frames, [colour_map(f) for f in frames])
    assert error < 0.005, error  # measured 6.8e-4: bilinear sampling of 8-bit colours


def test_warping_error_rises_with_independent_per_frame_noise():
    frames = panned_frames()
    rng = np.random.default_rng(1)
    errors = []
    for amplitude in (0.0, 0.02, 0.05, 0.1, 0.2):
        noisy = [np.clip(colour_map(f) + rng.normal(0, amplitude * 255, f.shape), 0, 255).astype(np.uint8)
                 for f in frames]
        errors.append(mean_warping_error(frames, noisy))
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    # for noise of std a in both frames the RMS difference is about a·√2 (bilinear sampling smooths a little)
    assert 0.1 < errors[-1] < 0.2 * np.sqrt(2), errors


def test_occluded_and_outside_pixels_are_not_counted():
    height, width = 40, 50
    backward = np.zeros((height, width, 2), np.float32)
    backward[..., 0] = -3  # each pixel of frame t came from 3 px to its left
    forward = np.zeros_like(backward)
    forward[..., 0] = 3
    forward[:, 20:30] = 0  # …except what frame t−1 shows in columns 20..29: an occluder that stays
    mask = evaluate.valid_mask(backward, forward)
    assert not mask[:, :3].any()  # their source lies outside frame t−1
    assert not mask[:, 23:33].any()  # their source is occluded: the round trip fails
    assert mask[:, 3:22].all() and mask[:, 34:].all()

    previous = texture(size=(height, width))
    current = np.roll(previous, 3, axis=1)
    current[:, 23:33] = np.random.default_rng(2).integers(0, 256, (height, 10, 3))  # whatever appears there
    assert evaluate.warping_error(previous, current, backward, mask) < 1e-6
    everything_inside = mask.copy()
    everything_inside[:, 23:33] = True
    assert evaluate.warping_error(previous, current, backward, everything_inside) > 0.1


def test_frame_difference_error_is_zero_for_a_constant_offset_and_measures_flicker():
    frames = [f // 2 for f in panned_frames(2)]  # ≤ 127: no clipping below
    offset = [f + 20 for f in frames]
    assert evaluate.frame_difference_error(*offset, *frames) == 0
    flicker = [frames[0], frames[1] + 20]  # brightness jumps by 20 levels at frame 1
    assert evaluate.frame_difference_error(*flicker, *frames) == pytest.approx(20 / 255, rel=1e-5)


# ---------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def stylized_clip(weight_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    content = str(folder / "clip.mp4")
    make_clip(content, 64, 48, frames=6)
    style = folder / "style.png"
    Image.fromarray(texture(size=(48, 64))).save(style)
    vgg, decoder, mcc = weight_files
    test_video.main(["--content", content, "--style", str(style), "--output", str(folder), "--vgg_path", vgg,
                     "--decoder_path", decoder, "--transform_path", mcc])
    return dict(content=content, stylized=str(folder / "clip_stylized_style.mp4"), style=str(style),
                folder=folder, vgg=vgg)


def evaluate_args(clip, output, *extra):
    return ["--content", clip["content"], "--stylized", clip["stylized"], "--style", clip["style"],
            "--vgg", clip["vgg"], "--output", str(output), *extra]


def test_report_end_to_end_is_reproducible(stylized_clip, tmp_path, capsys):
    for run in ("first", "second"):
        evaluate.main(evaluate_args(stylized_clip, tmp_path / run))
    table = capsys.readouterr().out
    assert "| video | warping error" in table and "(input: the floor)" in table
    assert "from 4 of 6 frames (--feature_every 4" in table
    first, second = (json.loads((tmp_path / run / "report.json").read_text()) for run in ("first", "second"))
    assert first["frames"] == 6 and first["size"] == [64, 48]
    entry, again = first["stylized"][0], second["stylized"][0]
    for column in evaluate.COLUMNS:
        values, repeat = entry["per_frame"][column], again["per_frame"][column]
        assert len(values) == (5 if column in evaluate.COLUMNS[:3] else 6)
        assert all(v is None or v >= 0 for v in values)
        np.testing.assert_allclose(as_floats(values), as_floats(repeat), rtol=1e-6, atol=1e-9, err_msg=column)
    # random weights: the stylized clip flickers far more than the input
    assert entry["mean"]["warping_error"] > first["input"]["mean"]["warping_error"]
    for picture in ("strip.png", "heatmaps.png", "temporal_error.png"):
        with Image.open(tmp_path / "first" / picture) as image:
            assert image.size[0] > 200 and image.size[1] > 100


def test_strip_frames_sets_the_frames_pictured(stylized_clip, tmp_path):
    """--strip_frames: that many pairs (t − 1, t), evenly spread, or every pair of a shorter video."""
    assert evaluate.picture_indices(6, 4) == [1, 2, 4, 5]
    assert evaluate.picture_indices(6, 1) == [1] and evaluate.picture_indices(6, 100) == [1, 2, 3, 4, 5]
    widths = {}
    for count in ("2", "5"):
        evaluate.main(evaluate_args(stylized_clip, tmp_path / count, "--strip_frames", count))
        with Image.open(tmp_path / count / "strip.png") as strip, Image.open(tmp_path / count / "heatmaps.png") as heat:
            widths[count] = strip.size[0], heat.size[0]
    columns = (2.6 * 5 + 0.6) / (2.6 * 2 + 0.6)  # the figure's width for 5 columns over that for 2 (grid_figure)
    assert widths["5"][0] / widths["2"][0] == pytest.approx(columns, rel=0.02) and widths["5"][1] > widths["2"][1]


def as_floats(values):
    return np.array(values, dtype=float)  # null (not computed) → NaN


def test_vgg_figures_on_every_kth_pair_are_those_of_every_frame(stylized_clip, tmp_path):
    evaluate.main(evaluate_args(stylized_clip, tmp_path / "sampled"))
    evaluate.main(evaluate_args(stylized_clip, tmp_path / "every", "--feature_every", "1"))
    sampled, every = ((json.loads((tmp_path / run / "report.json").read_text())["stylized"][0]["per_frame"])
                      for run in ("sampled", "every"))
    computed = {"frame_difference_pixels": [0, 1, 2, 3, 4], "warping_error": [0, 1, 2, 3, 4],
                "frame_difference_relu4_1": [0, 4],  # the pairs (0, 1) and (4, 5)
                "content_loss": [0, 1, 4, 5], "style_loss": [0, 1, 4, 5]}
    for column, indices in computed.items():
        assert [i for i, v in enumerate(sampled[column]) if v is not None] == indices, column
        assert None not in every[column], column
        np.testing.assert_allclose(as_floats(sampled[column])[indices], as_floats(every[column])[indices],
                                   rtol=1e-6, atol=1e-9, err_msg=column)


def test_several_stylized_videos_side_by_side(stylized_clip, tmp_path):
    evaluate.main(evaluate_args(stylized_clip, tmp_path, "--stylized", stylized_clip["content"]))
    report = json.loads((tmp_path / "report.json").read_text())
    assert [entry["path"] for entry in report["stylized"]] == [stylized_clip["stylized"], stylized_clip["content"]]
    identical = report["stylized"][1]["mean"]  # the input "stylized" as itself
    assert identical["frame_difference_pixels"] == 0 and identical["content_loss"] < 1e-6
    assert identical["warping_error"] == pytest.approx(report["input"]["mean"]["warping_error"])


def test_image_sequences_are_evaluated_as_the_videos_of_their_pictures(stylized_clip, tmp_path):
    """Other methods leave their results as numbered pictures (as test_video.py --save_frames does): the same frames
    as pictures give the same report as in a video file."""
    sequences = {}
    for name in ("content", "stylized"):
        folder = tmp_path / f"{name}_frames"
        folder.mkdir()
        with video.VideoReader(stylized_clip[name]) as reader:
            for k, (frame, _) in enumerate(reader.frames()):
                Image.fromarray(frame).save(folder / f"{k:06d}.png")
        sequences[name] = str(folder / "%06d.png")
    evaluate.main(evaluate_args(stylized_clip, tmp_path / "files"))
    args = evaluate_args(dict(stylized_clip, **sequences), tmp_path / "pictures")
    evaluate.main(args)
    files, pictures = (json.loads((tmp_path / run / "report.json").read_text()) for run in ("files", "pictures"))
    assert pictures["frames"] == files["frames"] == 6
    for column in evaluate.COLUMNS:
        np.testing.assert_allclose(as_floats(pictures["stylized"][0]["per_frame"][column]),
                                   as_floats(files["stylized"][0]["per_frame"][column]), rtol=1e-6, err_msg=column)
    args.remove("--output")
    assert evaluate.parse_args(args[:-1]).output == os.path.join("output", "stylized_frames_evaluation")
    folder = str(tmp_path / "stylized_frames")
    with pytest.raises(UserError, match=re.escape(f"--stylized {folder}: a folder; its pictures as a video: "
                                                  f"--stylized {folder}/%06d.png")):
        evaluate.main(evaluate_args(dict(stylized_clip, stylized=folder), tmp_path / "folder"))


# ---------------------------------------------------------------- bad input

def test_a_video_cut_without_reencoding_counts_the_frames_it_shows(tmp_path):
    """Not those before the cut, which its file holds to decode the first shown one (its stylized video, made
    by test_video.py, has only the shown ones)."""
    whole, cut = str(tmp_path / "whole.mp4"), str(tmp_path / "cut.mp4")
    make_clip(whole, 64, 48, frames=48)
    shifted(whole, cut, -1.3)
    assert evaluate.video_facts(cut, "--content") == (16, 64, 48)


def test_an_animated_webp_is_a_content_video(stylized_clip, tmp_path):
    """test_video.py stylizes one (read by PIL: FFmpeg does not decode it); evaluate.py reads it the same way."""
    webp = str(tmp_path / "clip.webp")
    make_clip(webp, 64, 48, frames=6, audio=None, container="webp", codec="libwebp_anim")
    evaluate.main(evaluate_args(dict(stylized_clip, content=webp), tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames"] == 6 and report["size"] == [64, 48]
    refused = "a frame is 64x48 = 3,072 pixels, above the limit of 3,000 (--max_pixels raises it)"
    with pytest.raises(UserError, match=re.escape(refused)):
        evaluate.main(evaluate_args(dict(stylized_clip, content=webp), tmp_path / "refused", "--max_pixels", "3000"))


def test_a_damaged_content_video_counts_the_frames_it_decodes(stylized_clip, weight_files, tmp_path):
    """As test_video.py stylizes them: a damaged packet costs a frame in both."""
    content = str(tmp_path / "damaged.mp4")
    remuxed(stylized_clip["content"], content, "mp4",
            lambda kind, number, data: bytes(len(data)) if kind == "video" and number == 4 else None)
    vgg, decoder, mcc = weight_files
    with pytest.raises(SystemExit):  # a damaged video: stylized as far as it decodes, exit 1
        cli.run(test_video.main, ["--content", content, "--style", stylized_clip["style"], "--output",
                                  str(tmp_path), "--vgg_path", vgg, "--decoder_path", decoder, "--transform_path", mcc])
    stylized = str(tmp_path / "damaged_stylized_style.mp4")
    assert evaluate.video_facts(content, "--content") == evaluate.video_facts(stylized, "--stylized")
    evaluate.main(evaluate_args(dict(stylized_clip, content=content, stylized=stylized), tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "report.json").read_text())["frames"] == 5


def test_different_frame_counts_are_refused(stylized_clip, tmp_path):
    shorter = str(tmp_path / "shorter.mp4")
    make_clip(shorter, 64, 48, frames=5)
    with pytest.raises(UserError, match=r"has 5 frames.*has 6 \(1 fewer\)"):
        evaluate.main(evaluate_args(dict(stylized_clip, stylized=shorter), tmp_path / "out"))


def test_different_sizes_are_refused_unless_resizing_is_asked(stylized_clip, tmp_path):
    wider = str(tmp_path / "wider.mp4")
    make_clip(wider, 66, 48, frames=6)
    clip = dict(stylized_clip, stylized=wider)
    with pytest.raises(UserError, match=r"is 66x48.*is 64x48 \(\+2 px wide, \+0 px high\).*--resize_stylized"):
        evaluate.main(evaluate_args(clip, tmp_path / "out"))
    evaluate.main(evaluate_args(clip, tmp_path / "out", "--resize_stylized"))
    assert json.loads((tmp_path / "out" / "report.json").read_text())["size"] == [64, 48]


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("text", "not a video that can be read"),
    ("one_frame", "1 frame; temporal consistency needs at least two"),
    ("undecodable", "no frame can be decoded ("),
])
def test_unusable_videos_are_refused(stylized_clip, tmp_path, case, message):
    path = str(tmp_path / f"{case}.mp4")
    if case == "text":
        open(path, "w").write("not a video")
    elif case == "one_frame":
        make_clip(path, 64, 48, frames=1)
    elif case == "undecodable":  # every frame's data zeroed, the container intact
        make_clip(str(tmp_path / "whole.mp4"), 64, 48, frames=6, audio=None)
        remuxed(str(tmp_path / "whole.mp4"), path, "mp4", lambda kind, number, data: bytes(len(data)))
    with pytest.raises(UserError, match=re.escape(message)):
        evaluate.main(evaluate_args(dict(stylized_clip, stylized=path), tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "report.json")


def test_bad_input_is_one_line_and_a_nonzero_exit(stylized_clip, tmp_path):
    """The one run of evaluate.py in a child process: the exit code as the shell sees it."""
    result = run_script("evaluate.py", *evaluate_args(dict(stylized_clip, vgg=str(tmp_path / "none.pth")),
                                                      tmp_path / "out"))
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Compiling" not in line]
    assert result.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("error: ") and "download_weights.py" in lines[0], result.stderr


@needs_mpi
def test_under_mpirun_with_several_ranks_one_line_says_to_run_it_alone(stylized_clip, tmp_path):
    result = mpirun(2, "evaluate.py", *evaluate_args(stylized_clip, tmp_path / "out"), timeout=120)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if "error:" in line] == [
        "error: evaluate.py runs as one process, and mpirun started 2, each of which would evaluate every video: "
        "run it without mpirun"], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra,message", [
    (["--feature_every", "0"], "--feature_every 0: must be at least 1"),
    (["--frames"], "unrecognized arguments: --frames"),
    (["--style", "/dev/zero"], "not a regular file"),
])
def test_flag_mistakes_are_one_line_and_exit_1(stylized_clip, tmp_path, run_main, extra, message):
    code, lines = run_main(evaluate, *evaluate_args(stylized_clip, tmp_path / "out"), *extra)
    assert code == 1 and len(lines) == 1 and message in lines[0], lines


def test_frames_too_large_for_the_gpus_memory_are_one_line(stylized_clip, tmp_path, run_main, monkeypatch):
    """Jittor's error where the GPU's memory is short (`JITTOR_GPU_MEMORY_ERROR`) ended the run in a traceback."""
    def encode_on_a_small_gpu(*args):
        raise RuntimeError(JITTOR_GPU_MEMORY_ERROR)

    monkeypatch.setattr(evaluate.net, "encode", encode_on_a_small_gpu)
    code, lines = run_main(evaluate, *evaluate_args(stylized_clip, tmp_path / "out"))
    assert code == 1 and lines == ["error: 64x48 frames, or the style at their height, through the VGG do not fit in "
                                   "the GPU's memory: evaluate on the CPU (--use_cuda 0)"]
    assert os.listdir(tmp_path / "out") == []  # no report
