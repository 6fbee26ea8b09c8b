"""test_video.py end to end on clips the tests make, and every bad input it must survive."""
import fractions
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
from PIL import Image

import video
from clips import make_clip, pattern
from conftest import REPO

SCRIPT = os.path.join(REPO, "test_video.py")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    paths = {
        "main": str(folder / "main.mp4"),        # 66×50: not a multiple of 8; 24000/1001 fps; AAC
        "odd": str(folder / "odd.mp4"),          # 65×49 stored, shown rotated by 90°, variable frame rate
    }
    stamps = {
        "main": make_clip(paths["main"], 66, 50, frames=12),
        "odd": make_clip(paths["odd"], 65, 49, frames=7, rotation=90, variable_rate=True, pix_fmt="yuv444p"),
    }
    style = folder / "style.png"
    Image.fromarray(pattern(3, 60, 45)[::-1].copy()).save(style)
    return dict(paths=paths, stamps=stamps, style=str(style), folder=folder)


def stylize(weight_files, *args):
    vgg, decoder, mcc = weight_files
    command = [sys.executable, SCRIPT, "--vgg_path", vgg, "--decoder_path", decoder, "--transform_path", mcc, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO)


def describe(path):
    """Video stream facts and decoded frames of a file."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [(f.pts * f.time_base, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        facts = dict(codec=stream.codec_context.name, pix_fmt=stream.codec_context.pix_fmt,
                     size=(stream.width, stream.height), rate=stream.average_rate)
    with av.open(path) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        facts["audio"] = None if audio is None else (
            audio.codec_context.name, float(audio.duration * audio.time_base))
    facts["times"] = [t for t, _ in frames]
    facts["frames"] = [f for _, f in frames]
    return facts


@pytest.fixture(scope="module")
def stylized(clips, weight_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = stylize(weight_files, "--video", f"{clips['paths']['main']},{clips['paths']['odd']}",
                     "--style", clips["style"], "--output", str(out), "--save_frames", "--save_ext", ".png",
                     "--batch_size", "3")
    assert result.returncode == 0, result.stderr
    return dict(out=out, stderr=result.stderr)


def test_video_keeps_size_rate_timestamps_frames_and_sound(clips, stylized):
    source = describe(clips["paths"]["main"])
    result = describe(str(stylized["out"] / "main_stylized_style.mp4"))
    assert result["codec"] == "h264" and result["pix_fmt"] == "yuv420p"
    assert result["size"] == (66, 50)
    assert len(result["frames"]) == 12
    assert result["times"] == source["times"]
    assert result["rate"] == fractions.Fraction(24000, 1001)
    assert result["audio"][0] == "aac" and abs(result["audio"][1] - source["audio"][1]) < 0.03
    assert "main.mp4 -> " in stylized["stderr"] and "12 frames 66x50" in stylized["stderr"]


def test_rotated_odd_variable_rate_video(clips, stylized):
    source = describe(clips["paths"]["odd"])
    result = describe(str(stylized["out"] / "odd_stylized_style.mp4"))
    # Shown upright: 49 wide, 65 high; encoded with one repeated row and column (4:2:0 needs even sizes).
    assert result["size"] == (50, 66)
    assert "7 frames 49x65 (encoded at 50x66" in stylized["stderr"]
    assert result["times"] == source["times"]  # variable frame rate: 1/15 s and 1/30 s apart, alternating
    assert sorted(set(np.diff([float(t) for t in result["times"]]).round(4))) == [0.0333, 0.0667]
    frames = sorted(os.listdir(stylized["out"] / "odd_stylized_style_frames"))
    assert len(frames) == 7 and Image.open(stylized["out"] / "odd_stylized_style_frames" / frames[0]).size == (49, 65)


def test_reader_turns_rotated_frames_upright(clips):
    with video.VideoReader(clips["paths"]["odd"]) as reader:
        first = next(item for item in reader.packets_and_frames() if item[0] == "video")[1]
    # Stored: green marker at the top left of a 65×49 frame; displayed rotated 90° counter-clockwise,
    # the marker lands at the bottom left of a 49×65 picture.
    assert first.shape == (65, 49, 3)
    green = (first[:, :, 1] > 200) & (first[:, :, 0] < 60) & (first[:, :, 2] < 60)
    rows, cols = np.nonzero(green)
    assert rows.min() > 40 and cols.max() < 15


def test_video_frames_equal_the_image_path(clips, stylized, weight_files, tmp_path):
    """Frame k of the video path = the image path on decoded frame k (≤ 1 level on ≥ 99.9% of pixels)."""
    with video.VideoReader(clips["paths"]["main"]) as reader:
        decoded = [item[1] for item in reader.packets_and_frames() if item[0] == "video"]
    for k in (0, 7, 11):
        Image.fromarray(decoded[k]).save(tmp_path / f"frame{k}.png")
    content = ",".join(str(tmp_path / f"frame{k}.png") for k in (0, 7, 11))
    result = stylize(weight_files, "--content", content, "--style", clips["style"], "--content_size", "0",
                     "--output", str(tmp_path / "images"), "--save_ext", ".png")
    assert result.returncode == 0, result.stderr
    for k in (0, 7, 11):
        image = np.asarray(Image.open(tmp_path / "images" / f"frame{k}_stylized_style.png"), dtype=int)
        frame = np.asarray(Image.open(stylized["out"] / "main_stylized_style_frames" / f"{k:06d}.png"), dtype=int)
        assert image.shape == frame.shape == (50, 66, 3)
        close = np.abs(image - frame) <= 1
        assert close.mean() >= 0.999, f"frame {k}: {close.mean():.5f} of pixels within 1 level"


@pytest.mark.parametrize("container,codec,audio,name", [
    ("matroska", "libx264", "pcm_s16le", "clip.data"),   # audio MP4 cannot copy: re-encoded to AAC
    ("webm", "libvpx-vp9", "libopus", "clip.webm"),
    ("gif", "gif", None, "clip.gif"),
])
def test_other_containers_by_content_not_name(weight_files, clips, tmp_path, container, codec, audio, name):
    path = str(tmp_path / name)
    pix_fmt = {"gif": "rgb8"}.get(codec, "yuv420p")
    make_clip(path, 48, 40, frames=5, rate=fractions.Fraction(10), audio=audio, container=container,
              codec=codec, pix_fmt=pix_fmt)
    result = stylize(weight_files, "--content", path, "--style", clips["style"], "--output", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    out = describe(str(tmp_path / "o" / f"{os.path.splitext(name)[0]}_stylized_style.mp4"))
    assert len(out["frames"]) == 5 and out["size"] == (48, 40)
    assert (out["audio"] is None) == (audio is None)
    if audio:
        assert out["audio"][0] == "aac" and out["audio"][1] > 0.4


def test_truncated_video_is_stylized_as_far_as_it_decodes(weight_files, clips, tmp_path):
    whole = str(tmp_path / "whole.mkv")
    make_clip(whole, 48, 40, frames=30, rate=fractions.Fraction(10), audio=None, container="matroska")
    data = open(whole, "rb").read()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = stylize(weight_files, "--content", str(cut), "--style", clips["style"], "--output", str(tmp_path / "o"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "cut.mkv is damaged: decoding stopped after" in warning[0]
    decoded = len(describe(str(tmp_path / "o" / "cut_stylized_style.mp4"))["frames"])
    assert 5 <= decoded < 30 and f"after {decoded} frames" in warning[0]


def test_ctrl_c_leaves_no_file_under_the_final_name(weight_files, clips, tmp_path):
    long_clip = str(tmp_path / "long.mp4")
    make_clip(long_clip, 64, 48, frames=400, audio=None)
    out = tmp_path / "o"
    vgg, decoder, mcc = weight_files
    process = subprocess.Popen([sys.executable, SCRIPT, "--vgg_path", vgg, "--decoder_path", decoder,
                                "--transform_path", mcc, "--content", long_clip, "--style", clips["style"],
                                "--output", str(out), "--batch_size", "1"],
                               cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out.exists() and any(p.name.endswith(".part.mp4") for p in out.iterdir())):
        assert time.time() < deadline and process.poll() is None, "the output never started"
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode != 0
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert list(out.iterdir()) == []


def bad_input_cases(clips, tmp):
    text = tmp / "notes.mp4"
    text.write_text("not a video\n")
    tiny = tmp / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny)
    empty = tmp / "empty.avi"
    with av.open(str(empty), "w", format="avi") as container:  # a video stream, no frame
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
        container.start_encoding()
    blocked = tmp / "blocked"
    blocked.write_text("a file where the output folder should be")
    main, style = clips["paths"]["main"], clips["style"]
    return {
        "missing content": (["--content", str(tmp / "nope.mp4"), "--style", style], "nope.mp4: no such file"),
        "missing style": (["--content", main, "--style", str(tmp / "nope.jpg")], "nope.jpg: no such file"),
        "neither image nor video": (["--content", str(text), "--style", style], "neither an image nor a video"),
        "video without frames": (["--content", str(empty), "--style", style], "without any decodable frame"),
        "too small": (["--content", str(tiny), "--style", style, "--content_size", "0"],
                      "8x8 is too small; the encoder needs at least 9x9"),
        "alpha": (["--content", main, "--style", style, "--alpha", "1.5"], "--alpha 1.5: must be within [0, 1]"),
        "weights count": (["--content", main, "--style", f"{style},{style}", "--style_interpolation_weights", "1"],
                          "has 1 weights for 2 styles"),
        "output not writable": (["--content", main, "--style", style, "--output", str(blocked / "sub")],
                                "cannot write there"),
        "style is a video": (["--content", main, "--style", main], "a style must be an image"),
    }


CASES = ["missing content", "missing style", "neither image nor video", "video without frames", "too small",
         "alpha", "weights count", "output not writable", "style is a video"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(weight_files, clips, tmp_path, case):
    args, expected = bad_input_cases(clips, tmp_path)[case]
    out = tmp_path / "out"
    if "--output" not in args:
        args = args + ["--output", str(out)]
    result = stylize(weight_files, *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Compiling" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_weights_say_where_to_get_them(clips, tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, "--content", clips["paths"]["main"], "--style", clips["style"],
                             "--decoder_path", str(tmp_path / "decoder_iter_160000.pth"),
                             "--output", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert "no such file" in line and "github.com/diyiiyiii/MCCNet" in line and "experiments/" in line


def test_wrong_weights_say_which_network_and_where_to_get_them(weight_files, clips, tmp_path):
    vgg, decoder, mcc = weight_files
    result = stylize((vgg, mcc, mcc), "--content", clips["paths"]["main"], "--style", clips["style"],
                     "--output", str(tmp_path / "o"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {mcc}: not the decoder weights") and "github.com/diyiiyiii/MCCNet" in line
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_images_of_every_mode_and_a_folder(weight_files, clips, tmp_path):
    folder = tmp_path / "content"
    folder.mkdir()
    base = pattern(1, 40, 30)
    Image.fromarray(base).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(base).convert("L").save(folder / "grey.png")
    Image.fromarray(base).convert("P").save(folder / "palette.gif")
    (folder / "readme.txt").write_text("not an image")
    result = stylize(weight_files, "--content_dir", str(folder), "--style", clips["style"],
                     "--output", str(tmp_path / "o"), "--content_size", "32")
    assert result.returncode == 0, result.stderr
    assert "skipping" in result.stderr and "readme.txt" in result.stderr
    names = sorted(os.listdir(tmp_path / "o"))
    assert names == ["grey_stylized_style.jpg", "palette_stylized_style.jpg", "rgba_stylized_style.jpg"]
    # Shorter side resized to --content_size 32: 40×30 → 42×32.
    assert all(Image.open(tmp_path / "o" / n).size == (42, 32) for n in names)
