"""test_video.py (stylizing videos and images) end to end on clips the tests make, and every bad
input it must survive."""
import contextlib
import copy
import fractions
import io
import itertools
import os
import signal
import struct
import subprocess
import sys
import time

import av
import numpy as np
import pillow_heif
import pytest
import torch
from PIL import Image, PngImagePlugin, WebPImagePlugin

import backend
import cli
import net
import test_video
import torch_mccnet
import transformer
import video
import weights
from clips import combing, make_clip, make_interlaced_clip, pattern, remuxed, retagged, shifted
from conftest import JITTOR_GPU_MEMORY_ERROR, REPO, mpirun, needs_mpi, peak_memory_of_script, run_script


BT709 = (1, 1, 1)  # FFmpeg's numbers for its colour matrix, primaries and transfer: what HD cameras tag
SRGB = (1, 1, 13)  # BT.709's matrix and primaries, sRGB's transfer: what RGB frames and pictures are written as
WIDE, TALL = fractions.Fraction(4, 3), fractions.Fraction(3, 4)  # anamorphic pixels: width / height


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    paths = {
        "main": str(folder / "main.mp4"),        # 66×50: not a multiple of 8; 24000/1001 fps; AAC; BT.709
        "odd": str(folder / "odd.mp4"),          # 65×49 stored, shown rotated by 90°, variable frame rate,
                                                 # pixels 4:3 (anamorphic)
    }
    stamps = {
        "main": make_clip(paths["main"], 66, 50, frames=12, colour=BT709),
        "odd": make_clip(paths["odd"], 65, 49, frames=7, rotation=90, variable_rate=True, pix_fmt="yuv444p",
                         aspect=WIDE),
    }
    style = folder / "style.png"
    Image.fromarray(pattern(3, 60, 45)[::-1].copy()).save(style)
    return dict(paths=paths, stamps=stamps, style=str(style), folder=folder)


@pytest.fixture
def stylize(weight_files, run_main):
    """test_video.py with the test weights, in this process: (exit code, user lines)."""
    vgg, decoder, mcc = weight_files
    return lambda *args: run_main(test_video, "--vgg_path", vgg, "--decoder_path", decoder,
                                  "--transform_path", mcc, *args)


def describe(path):
    """Video stream facts and decoded frames of a file."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [(f.pts * f.time_base, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        facts = dict(codec=stream.codec_context.name, pix_fmt=stream.codec_context.pix_fmt,
                     size=(stream.width, stream.height), rate=stream.average_rate, aspect=stream.sample_aspect_ratio,
                     colour=(stream.codec_context.colorspace, stream.codec_context.color_primaries,
                             stream.codec_context.color_trc))
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
    vgg, decoder, mcc = weight_files
    result = run_script("test_video.py", "--vgg_path", vgg, "--decoder_path", decoder, "--transform_path", mcc,
                        "--video", f"{clips['paths']['main']},{clips['paths']['odd']}", "--style", clips["style"],
                        "--output", out, "--save_frames", "--save_ext", ".png", "--batch_size", "3")
    assert result.returncode == 0, result.stderr
    return dict(out=out, stderr=result.stderr)


def test_video_keeps_size_rate_timestamps_colours_frames_and_sound(clips, stylized):
    source = describe(clips["paths"]["main"])
    result = describe(str(stylized["out"] / "main_stylized_style.mp4"))
    assert result["codec"] == "h264" and result["pix_fmt"] == "yuv420p"
    assert result["colour"] == source["colour"] == BT709
    assert result["aspect"] in (None, 1)  # square pixels stay square
    assert result["size"] == (66, 50)
    assert len(result["frames"]) == 12
    assert result["times"] == source["times"]
    assert result["rate"] == fractions.Fraction(24000, 1001)
    assert result["audio"][0] == "aac" and abs(result["audio"][1] - source["audio"][1]) < 0.03
    assert "main.mp4 -> " in stylized["stderr"] and "12 frames 66x50" in stylized["stderr"]
    data = (stylized["out"] / "main_stylized_style.mp4").read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart: the index first, so browsers play at once


def test_audio_is_interleaved_with_the_video(stylized):
    """Audio packets are muxed in step with the frames (players and browsers stream MP4 in file order)."""
    with av.open(str(stylized["out"] / "main_stylized_style.mp4")) as container:
        order = [packet.stream.type for packet in container.demux() if packet.size]
    first_audio, last_video = order.index("audio"), len(order) - 1 - order[::-1].index("video")
    assert first_audio < last_video


def test_rotated_odd_variable_rate_anamorphic_video(clips, stylized):
    source = describe(clips["paths"]["odd"])
    result = describe(str(stylized["out"] / "odd_stylized_style.mp4"))
    # Pixels 4:3 wide as stored are 3:4 upright: a player shows the output in the input's shape.
    assert source["aspect"] == WIDE and result["aspect"] == TALL
    # Shown upright: 49 wide, 65 high; encoded with one repeated row and column (4:2:0 needs even sizes).
    assert result["size"] == (50, 66)
    assert "7 frames 49x65 (encoded at 50x66" in stylized["stderr"]
    assert result["times"] == source["times"]  # variable frame rate: 1/15 s and 1/30 s apart, alternating
    assert sorted(set(np.diff([float(t) for t in result["times"]]).round(4))) == [0.0333, 0.0667]
    frames = sorted(os.listdir(stylized["out"] / "odd_stylized_style_frames"))
    assert len(frames) == 7 and Image.open(stylized["out"] / "odd_stylized_style_frames" / frames[0]).size == (49, 65)


def shown_by_a_player(frame):
    """A decoded frame as RGB, as a player shows it: with the matrix it is tagged with, or untagged, with the one
    players guess from its size (mpv's rule: BT.709 from 1280 wide or 577 high up, else BT.601)."""
    if frame.colorspace == 2:
        frame.colorspace = 1 if frame.width >= 1280 or frame.height > 576 else 6
    return frame.to_ndarray(format="rgb24")


@pytest.mark.parametrize("clip,colour", [
    (dict(container="mp4", colour=(2, 2, 2)), (6, 2, 2)),  # BT.601's matrix, as players guess at this size
    (dict(container="mp4", colour=BT709), BT709),
    (dict(container="mp4", colour=(9, 9, 16)), (9, 9, 16)),
    (dict(codec="png", pix_fmt="rgb24", container="mov"), SRGB),  # tagged with the "RGB" matrix, 0
    (dict(codec="qtrle", pix_fmt="argb", container="mov"), SRGB),  # untagged
    (dict(codec="gif", pix_fmt="rgb8", container="gif"), SRGB),
    (dict(codec="libwebp_anim", container="webp"), SRGB),
    ("image sequence", SRGB),
], ids=["untagged", "BT.709", "BT.2020 PQ", "PNG in MOV", "QuickTime Animation", "GIF", "animated WebP",
        "image sequence"])
def test_a_player_shows_the_output_in_the_inputs_colours(tmp_path, clip, colour):
    """A player turns YUV into RGB with the matrix a video is tagged with (or, untagged, with a guess it makes from the
    size): the output must be tagged as the input (with the guessed matrix where it is untagged), and its frames
    converted to YUV with the matrix that the reader's were converted from YUV with. A wrong matrix shifts a
    saturated green by 10-13 grey levels on average. Frames that come as RGB have no matrix to keep: the output is
    BT.709, tagged, as sRGB pictures are (untagged, a player would guess the matrix by the size; an RGB video's
    "RGB" matrix would have it show Y, U and V as G, B and R)."""
    source, output = str(tmp_path / "in"), tmp_path / "out.mp4"
    if clip == "image sequence":
        source = numbered_pictures(tmp_path / "frames", range(3), size=(128, 96))
    else:
        make_clip(source, 128, 96, frames=3, audio=None, **clip)
    with contextlib.closing(video.open_video(source)) as reader, open(output, "wb") as file:
        writer = video.VideoWriter(file, reader, 128, 96)
        read = []
        for frame, pts in reader.frames():
            writer.write_frame(frame, pts)
            read.append(frame)
        writer.close()
    with av.open(str(output)) as container:
        shown = [(f.colorspace, f.color_primaries, f.color_trc, shown_by_a_player(f))
                 for f in container.decode(video=0)]
    assert [tags for *tags, _ in shown] == [list(colour)] * 3
    green = (slice(4, 16), slice(4, 22))  # inside the clip's green corner
    errors = [np.abs(rgb[green].astype(int) - frame[green]).mean() for (*_, rgb), frame in zip(shown, read)]
    assert max(errors) <= 3, errors


@pytest.mark.parametrize("size,encoded_with,scale", [((1280, 720), 1, 1), ((128, 96), 6, 10)],
                         ids=["HD", "SD stylized at an HD size"])
def test_an_untagged_video_is_read_as_a_player_shows_it_and_shown_so_at_any_size(
        tmp_path, size, encoded_with, scale):
    """An untagged video (what FFmpeg writes unless told) is shown with a matrix a player guesses from its size.
    The frames read are what a player shows of the input; the output, tagged with that matrix, is shown as written
    at any size (--content_size may cross the guess's bounds). Read or shown with the other matrix, the clip's
    green corner is 9 grey levels off on average."""
    width, height = size
    source, output = str(tmp_path / "in.mp4"), tmp_path / "out.mp4"
    make_clip(source, width, height, frames=2, audio=None, untagged_matrix=encoded_with)
    with contextlib.closing(video.open_video(source)) as reader, open(output, "wb") as file:
        writer = video.VideoWriter(file, reader, width * scale, height * scale)
        read = []
        for frame, pts in reader.frames():
            writer.write_frame(np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1), pts)
            read.append(frame)
        writer.close()
    with av.open(source) as container:
        input_shown = [shown_by_a_player(f) for f in container.decode(video=0)]
    with av.open(str(output)) as container:
        output_shown = [shown_by_a_player(f)[::scale, ::scale] for f in container.decode(video=0)]
    green = (slice(4, height // 5 - 3), slice(4, width // 5 - 3))  # inside the clip's green corner
    for frame, input_rgb, output_rgb in zip(read, input_shown, output_shown, strict=True):
        assert np.abs(frame[green].astype(int) - input_rgb[green]).mean() <= 1
        assert np.abs(output_rgb[green].astype(int) - frame[green]).mean() <= 3


@pytest.mark.parametrize("aspect,rotation,upright", [(None, 90, None), (WIDE, 0, WIDE), (WIDE, 90, TALL),
                                                     (WIDE, 180, WIDE)])
def test_reader_gives_the_shape_of_upright_pixels(tmp_path, aspect, rotation, upright):
    path = str(tmp_path / "clip.mp4")
    make_clip(path, 64, 48, frames=2, audio=None, rotation=rotation, aspect=aspect)
    with video.VideoReader(path) as reader:
        list(reader.frames())
    assert reader.pixel_aspect == upright


@pytest.mark.parametrize("codec,pix_fmt,extension,tolerance", [
    ("png", "rgba", "mov", 2), ("qtrle", "argb", "mov", 2), ("prores_ks", "yuva444p10le", "mov", 2),
    ("libvpx-vp9", "yuva420p", "webm", 10)])  # a sticker's format; lossy
def test_reader_lays_transparent_pixels_over_white(tmp_path, codec, pix_fmt, extension, tolerance):
    """As pictures' are: a video's transparent pixels hide a colour (here green) that a viewer does not see.
    (FFmpeg's own VP9 decoder drops a WebM's transparency: libvpx's reads it.)"""
    frame = np.zeros((40, 48, 4), np.uint8)
    frame[..., 1] = 255  # green, transparent
    frame[10:20, 10:20] = (200, 30, 30, 255)
    frame[20:30, 10:20] = (200, 30, 30, 128)
    path = str(tmp_path / f"overlay.{extension}")
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 40, pix_fmt
        for index in range(2):
            picture = av.VideoFrame.from_ndarray(frame, format="rgba")
            picture.pts = index
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    with video.VideoReader(path) as reader:
        first = next(reader.frames())[0].astype(int)
    np.testing.assert_allclose(first[0, 0], (255, 255, 255), atol=tolerance)
    np.testing.assert_allclose(first[15, 15], (200, 30, 30), atol=tolerance)
    np.testing.assert_allclose(first[25, 15], (228, 142, 142), atol=tolerance + 1)  # half over white


def test_reader_turns_rotated_frames_upright(clips):
    with video.VideoReader(clips["paths"]["odd"]) as reader:
        first = next(reader.frames())[0]
    # Stored: green marker at the top left of a 65×49 frame; displayed rotated 90° counter-clockwise,
    # the marker lands at the bottom left of a 49×65 picture.
    assert first.shape == (65, 49, 3)
    green = (first[:, :, 1] > 200) & (first[:, :, 0] < 60) & (first[:, :, 2] < 60)
    rows, cols = np.nonzero(green)
    assert rows.min() > 40 and cols.max() < 15


def test_video_frames_equal_the_image_path(clips, stylized, stylize, tmp_path):
    """Frame k of the video path = the image path on decoded frame k (≤ 1 level on ≥ 99.9% of pixels)."""
    with video.VideoReader(clips["paths"]["main"]) as reader:
        decoded = [frame for frame, _ in reader.frames()]
    for k in (0, 7, 11):
        Image.fromarray(decoded[k]).save(tmp_path / f"frame{k}.png")
    content = ",".join(str(tmp_path / f"frame{k}.png") for k in (0, 7, 11))
    code, lines = stylize("--content", content, "--style", clips["style"], "--content_size", "0",
                          "--output", tmp_path / "images", "--save_ext", ".png")
    assert code == 0, lines
    for k in (0, 7, 11):
        image = np.asarray(Image.open(tmp_path / "images" / f"frame{k}_stylized_style.png"), dtype=int)
        frame = np.asarray(Image.open(stylized["out"] / "main_stylized_style_frames" / f"{k:06d}.png"), dtype=int)
        assert image.shape == frame.shape == (50, 66, 3)
        close = np.abs(image - frame) <= 1
        assert close.mean() >= 0.999, f"frame {k}: {close.mean():.5f} of pixels within 1 level"


def test_crop_makes_every_content_square_a_videos_frames_too(clips, stylize, tmp_path):
    """--crop centre-crops a video's frames as it does a picture (the original cropped only a video's style): frame
    k of the video equals the image path on decoded frame k with --crop, sizes by --content_size."""
    code, lines = stylize("--content", f"{clips['paths']['main']},{clips['paths']['odd']}", "--style", clips["style"],
                          "--crop", "--output", tmp_path / "videos", "--save_frames", "--save_ext", ".png")
    assert code == 0, lines
    main = describe(str(tmp_path / "videos" / "main_stylized_style.mp4"))
    assert main["size"] == (50, 50) and len(main["frames"]) == 12
    assert main["times"] == describe(clips["paths"]["main"])["times"]
    odd = describe(str(tmp_path / "videos" / "odd_stylized_style.mp4"))  # upright 49×65
    assert odd["size"] == (50, 50) and len(odd["frames"]) == 7  # encoded with a repeated row and column
    assert Image.open(tmp_path / "videos" / "odd_stylized_style_frames" / "000000.png").size == (49, 49)
    with video.VideoReader(clips["paths"]["main"]) as reader:
        decoded = [frame for frame, _ in reader.frames()]
    for k in (0, 11):
        Image.fromarray(decoded[k]).save(tmp_path / f"frame{k}.png")
    code, lines = stylize("--content", f"{tmp_path / 'frame0.png'},{tmp_path / 'frame11.png'}", "--style",
                          clips["style"], "--crop", "--content_size", "0", "--output", tmp_path / "images",
                          "--save_ext", ".png")
    assert code == 0, lines
    for k in (0, 11):
        image = np.asarray(Image.open(tmp_path / "images" / f"frame{k}_stylized_style.png"))
        frame = np.asarray(Image.open(tmp_path / "videos" / "main_stylized_style_frames" / f"{k:06d}.png"))
        assert frame.shape == (50, 50, 3)
        assert_within_a_level(frame, image, f"frame {k}")
    code, lines = stylize("--content", clips["paths"]["main"], "--style", clips["style"], "--crop",
                          "--content_size", "40", "--output", tmp_path / "sized")
    assert code == 0, lines
    assert describe(str(tmp_path / "sized" / "main_stylized_style.mp4"))["size"] == (40, 40)


def oracle_picture(oracle, content, styles, alpha=1.0, weights=None):
    """The PyTorch oracle's stylization in float64 of a CHW content with CHW styles, as an HWC uint8 picture."""
    height, width = content.shape[1:]
    with torch.no_grad():
        models = [copy.deepcopy(model).double() for model in oracle]
        stylized = torch_mccnet.style_transfer(*models, torch.from_numpy(content[None]).double(),
                                               [torch.from_numpy(s[None]).double() for s in styles],
                                               alpha=alpha, weights=weights)
    return transformer.array_to_image(stylized[0, :, :height, :width].numpy())


def assert_within_a_level(written, expected, what):
    close = np.abs(np.asarray(written, dtype=int) - np.asarray(expected, dtype=int)) <= 1
    assert written.shape == expected.shape and close.mean() >= 0.999, f"{what}: {close.mean():.5f} within 1 level"


def test_preserve_color_gives_the_style_the_colours_of_all_of_a_videos_frames(oracle, stylize, clips, tmp_path):
    """--preserve_color on a video that fades in from black: the style gets the colours of all its frames (those of
    the first alone, a black frame's, would make every frame's style black, and failed: 0 / 0 in CORAL). Each
    frame written equals the PyTorch oracle's (float64) with that style, within a level on ≥ 99.9% of pixels."""
    pictures = [np.zeros((40, 48, 3), np.uint8)] + [pattern(number, 48, 40) for number in range(1, 5)]
    (tmp_path / "fade").mkdir()
    for number, picture in enumerate(pictures):
        Image.fromarray(picture).save(tmp_path / "fade" / f"{number:05d}.png")
    code, lines = stylize("--content", tmp_path / "fade" / "%05d.png", "--style", clips["style"], "--preserve_color",
                          "--output", tmp_path / "o", "--save_frames", "--save_ext", ".png")
    assert code == 0, lines
    colours = transformer.ColourStatistics()
    for picture in pictures:
        colours.add(picture)
    style = transformer.coral(transformer.test_transform(Image.open(clips["style"]), 40), colours)
    for number, picture in enumerate(pictures):
        written = np.asarray(Image.open(tmp_path / "o" / "fade_stylized_style_frames" / f"{number:05d}.png"))
        assert_within_a_level(written, oracle_picture(oracle, transformer.image_to_array(picture), [style]),
                              f"frame {number}")


def test_the_originals_image_flags_give_the_oracles_picture(oracle, stylize, tmp_path):
    """--content_size, --style_size, --preserve_color, two styles blended by --style_interpolation_weights and --a,
    end to end: the picture written equals the PyTorch oracle's stylization (float64) of the inputs sized and
    recoloured by the original's rules, within one grey level on ≥ 99.9% of pixels."""
    content, first, second = tmp_path / "content.png", tmp_path / "first.png", tmp_path / "second.png"
    Image.fromarray(pattern(1, 60, 44)).save(content)
    Image.fromarray(pattern(2, 50, 70)).save(first)
    Image.fromarray(pattern(3, 90, 48)).save(second)
    code, lines = stylize("--content", content, "--style", f"{first},{second}", "--content_size", "48",
                          "--style_size", "40", "--preserve_color", "--style_interpolation_weights", "1,3",
                          "--a", "0.6", "--output", tmp_path / "o", "--save_ext", ".png")
    assert code == 0, lines
    written = np.asarray(Image.open(tmp_path / "o" / "content_stylized_first_second.png"))
    sized = transformer.test_transform(Image.open(content), 48)
    colours = transformer.ColourStatistics().add(np.asarray(transformer.sized_image(Image.open(content), 48)))
    styles = [transformer.coral(transformer.test_transform(Image.open(path), 40), colours) for path in (first, second)]
    assert sized.shape == (3, 48, 65) and [s.shape for s in styles] == [(3, 56, 40), (3, 40, 75)]
    assert_within_a_level(written, oracle_picture(oracle, sized, styles, alpha=0.6, weights=[0.25, 0.75]), "picture")


def numbered_pictures(folder, numbers, name="%05d.png", size=(48, 40)):
    """Pictures `pattern(number)` in `folder`, named as `name` numbers them; returns `folder/name`."""
    folder.mkdir(exist_ok=True)
    for number in numbers:
        Image.fromarray(pattern(number, *size)).save(folder / (name % number))
    return str(folder / name)


def test_reader_reads_an_image_sequence_in_the_order_of_its_numbers(tmp_path):
    """As FFmpeg and OpenCV number them: frame_10 after frame_9, frame_010 not one of frame_%d's. A gap in the
    numbering (every other frame kept) is none in time; a picture of another size is scaled to the first's."""
    folder = tmp_path / "bear"
    sequence = numbered_pictures(folder, [8, 9, 10, 12], name="frame_%d.png")
    Image.fromarray(pattern(11, 48, 40)).save(folder / "frame_011.png")
    Image.fromarray(pattern(13, 48, 40)).save(folder / "frame_13.jpg")
    Image.fromarray(pattern(14, 60, 50)).save(folder / "frame_14.png")
    (folder / "notes.txt").write_text("not a picture")
    assert video.probe(sequence) == "video" and video.media_name(sequence) == "bear"
    with contextlib.closing(video.open_video(sequence, sequence_rate=fractions.Fraction(24000, 1001))) as reader:
        frames = list(reader.frames())
        assert reader.time_base == fractions.Fraction(1001, 24000) and reader.problem is None
        assert reader.notes() == "1 picture(s) of another size scaled to the first's"
    assert [pts for _, pts in frames] == [0, 1, 2, 3, 4]
    for (frame, _), number in zip(frames, [8, 9, 10, 12]):
        np.testing.assert_array_equal(frame, pattern(number, 48, 40))
    assert frames[4][0].shape == (40, 48, 3)


def test_an_image_sequence_is_stylized_as_a_video(stylize, clips, tmp_path):
    """bear/%05d.png at --frame_rate (a long decimal taken as 24000/1001), named after its folder; each frame as
    the image path makes its picture, saved under the picture's name."""
    sequence = numbered_pictures(tmp_path / "bear", range(1, 7))
    out = tmp_path / "o"
    code, lines = stylize("--content", sequence, "--style", clips["style"], "--frame_rate", "23.976023976",
                          "--output", out, "--save_frames", "--save_ext", ".png")
    assert code == 0, lines
    made = describe(str(out / "bear_stylized_style.mp4"))
    assert len(made["frames"]) == 6 and made["size"] == (48, 40) and made["audio"] is None
    assert made["times"] == [fractions.Fraction(1001, 24000) * k for k in range(6)]
    pictures = [str(tmp_path / "bear" / f"{k:05d}.png") for k in (1, 4)]
    code, lines = stylize("--content", ",".join(pictures), "--style", clips["style"], "--output", tmp_path / "images",
                          "--content_size", "0", "--save_ext", ".png")
    assert code == 0, lines
    assert sorted(os.listdir(out / "bear_stylized_style_frames")) == [f"{number:05d}.png" for number in range(1, 7)]
    for number in (1, 4):
        image = np.asarray(Image.open(tmp_path / "images" / f"{number:05d}_stylized_style.png"), dtype=int)
        frame = np.asarray(Image.open(out / "bear_stylized_style_frames" / f"{number:05d}.png"), dtype=int)
        assert (np.abs(image - frame) <= 1).mean() >= 0.999


def test_content_dir_takes_each_folder_of_numbered_pictures_as_a_video(stylize, clips, tmp_path):
    """DAVIS/JPEGImages/480p: a folder per video. Its files are inputs as before; a folder without a sequence is
    none."""
    davis = tmp_path / "480p"
    davis.mkdir()
    numbered_pictures(davis / "bear", range(3))
    numbered_pictures(davis / "car-turn", range(4), name="frame_%04d.jpg")
    Image.fromarray(pattern(1, 40, 30)).save(davis / "still.png")
    (davis / "notes").mkdir()
    (davis / "notes" / "readme.txt").write_text("not a picture")
    code, lines = stylize("--content_dir", davis, "--style", clips["style"], "--output", tmp_path / "o",
                          "--content_size", "0", "--save_ext", ".png")
    assert code == 0, lines
    made = sorted(os.listdir(tmp_path / "o"))
    assert made == ["bear_stylized_style.mp4", "car-turn_stylized_style.mp4", "still_stylized_style.png"]
    assert [len(describe(str(tmp_path / "o" / name))["frames"]) for name in made[:2]] == [3, 4]
    other = tmp_path / "other"
    (other / "notes").mkdir(parents=True)
    code, lines = stylize("--content_dir", other, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1 and lines == [f"error: --content_dir {other}: holds no files nor folders of numbered "
                                   "pictures"], lines


def test_a_picture_of_a_sequence_that_cannot_be_read_costs_its_own_frame(stylize, clips, tmp_path):
    """As a damaged packet of a video: a warning, exit 1, and its time left empty in the stylized video."""
    sequence = numbered_pictures(tmp_path / "seq", range(5))
    damaged = tmp_path / "seq" / "00002.png"
    damaged.write_bytes(damaged.read_bytes()[:100])
    code, lines = stylize("--content", sequence, "--style", clips["style"], "--output", tmp_path / "o",
                          "--save_frames")
    assert code == 1
    assert sorted(os.listdir(tmp_path / "o" / "seq_stylized_style_frames")) == [
        "00000.jpg", "00001.jpg", "00003.jpg", "00004.jpg"]
    assert any(line.startswith(f"WARNING: {sequence} is damaged: 4 frames decoded (1 of 5 picture(s) cannot be "
                               f"read; {damaged}: ") for line in lines), lines
    times = describe(str(tmp_path / "o" / "seq_stylized_style.mp4"))["times"]
    assert times == [fractions.Fraction(k, 25) for k in (0, 1, 3, 4)]


@pytest.mark.parametrize("container,codec,audio,name", [
    ("matroska", "libx264", "pcm_s16le", "clip.data"),   # audio MP4 cannot copy: re-encoded to AAC
    ("webm", "libvpx-vp9", "libopus", "clip.webm"),
    ("gif", "gif", None, "clip.gif"),
    ("webp", "libwebp_anim", None, "clip.webp"),  # animated: read by PIL, as FFmpeg does not decode it
])
def test_other_containers_by_content_not_name(stylize, clips, tmp_path, container, codec, audio, name):
    path = str(tmp_path / name)
    pix_fmt = {"gif": "rgb8"}.get(codec, "yuv420p")
    make_clip(path, 48, 40, frames=5, rate=fractions.Fraction(10), audio=audio, container=container,
              codec=codec, pix_fmt=pix_fmt)
    code, lines = stylize("--content", path, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 0, lines
    out = describe(str(tmp_path / "o" / f"{os.path.splitext(name)[0]}_stylized_style.mp4"))
    assert len(out["frames"]) == 5 and out["size"] == (48, 40)
    np.testing.assert_allclose(np.diff([float(t) for t in out["times"]]), 0.1)  # 10 frames/s
    assert (out["audio"] is None) == (audio is None)
    if audio:
        assert out["audio"][0] == "aac" and out["audio"][1] > 0.4


def test_a_video_cut_without_reencoding_is_not_damaged(stylize, clips, tmp_path, monkeypatch):
    """Its file holds more frames than it shows: those before the cut are there to be decoded, not shown."""
    whole, cut = str(tmp_path / "whole.mp4"), str(tmp_path / "cut.mp4")
    make_clip(whole, 64, 48, frames=48, rate=fractions.Fraction(24))  # one keyframe, at 0
    shifted(whole, cut, -fractions.Fraction(13, 10))
    with video.VideoReader(cut) as reader:
        frames = list(reader.frames())
        assert reader.problem is None and reader.frames_expected == 48
    assert len(frames) == 16 and frames[0][1] == 0  # 1.3 s at 24 frames/s: frames 32 to 47
    bars = []

    class ProgressBar(test_video.tqdm):
        def close(self):
            bars.append((self.n, self.total))
            super().close()
    monkeypatch.setattr(test_video, "tqdm", ProgressBar)
    code, lines = stylize("--content", cut, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 0 and not any("WARNING" in line for line in lines), lines
    assert bars[-1] == (16, 16)  # the progress bar ends full, not at 16 of the file's 48


@pytest.mark.parametrize("audio", ["aac", "mp2"], ids=["sound copied", "sound re-encoded"])
def test_a_recording_that_starts_late_is_written_from_time_zero(stylize, clips, tmp_path, audio):
    """A broadcast's or a camera's MPEG-TS starts where its clock stood (here 1000 s in). Written as it is,
    the MP4 would open with 1000 s of nothing (an empty edit), and re-encoded sound, which starts at 0,
    would be 1000 s off its frames. As FFmpeg does, the output starts at 0, the streams in step."""
    recording, late = str(tmp_path / "recording.ts"), str(tmp_path / "late.ts")
    stamps = make_clip(recording, 48, 40, frames=12, rate=fractions.Fraction(10), container="mpegts", audio=audio)
    shifted(recording, late, 1000)
    code, lines = stylize("--content", late, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 0, lines
    out = str(tmp_path / "o" / "late_stylized_style.mp4")
    with av.open(late) as container:
        start = container.start_time / av.time_base  # its earliest stream's first timestamp: 1000 s and a bit
    assert 1000 <= start < 1000.5 and len(stamps) == 12
    np.testing.assert_allclose([float(t) for t in describe(out)["times"]],
                               [float(t) - start for t in describe(late)["times"]], atol=1e-3)  # MP4 edits: ms
    with av.open(out) as container:
        assert container.duration / av.time_base < 1.5
        assert abs(float(container.streams.audio[0].start_time * container.streams.audio[0].time_base)) < 0.1


@pytest.mark.parametrize("container,audio,rate", [("mpegts", "aac", 48000), ("mpegts", "mp2", 48000),
                                                  ("matroska", "pcm_s16le", 48000), ("matroska", "pcm_s24le", 192000)],
                         ids=["copied", "re-encoded", "PCM re-encoded", "192 kHz PCM re-encoded at 96 kHz"])
def test_sound_that_starts_after_the_first_frame_stays_in_step(tmp_path, container, audio, rate):
    """Half a second of silence before the sound (a DVB recording's sound often starts apart from its picture):
    the output's sound starts as far after its first frame, whether copied or re-encoded to AAC, and lasts as
    long (AAC's highest rate is 96 kHz)."""
    source, output = str(tmp_path / "in"), tmp_path / "out.mp4"
    make_clip(source, 48, 40, frames=20, rate=fractions.Fraction(10), container=container, audio=audio,
              sound_start=0.5, sound_rate=rate)
    with video.VideoReader(source) as reader, open(output, "wb") as file:
        frames = reader.frames()
        first = next(frames)
        writer = video.VideoWriter(file, reader, 48, 40)
        for frame, pts in itertools.chain([first], frames):
            writer.write_frame(frame, pts)
        writer.close()

    def sound_after_picture(path):
        with av.open(path) as given:
            video_start, sound_start = (float(stream.start_time * stream.time_base) for stream in given.streams)
        return sound_start - video_start
    assert sound_after_picture(str(output)) == pytest.approx(sound_after_picture(source), abs=0.03)
    assert describe(str(output))["audio"][1] == pytest.approx(2.0, abs=0.05)  # 20 frames at 10 a second


@pytest.mark.parametrize("encoding,title", [("utf-8", "Vacances à Nice"), ("latin-1", "Vacances \ufffd Nice")])
def test_the_files_tags_are_kept(stylize, clips, tmp_path, encoding, title):
    """What FFmpeg copies by default: a phone's gallery sorts videos by their creation time and maps them by their
    place. Tags written in Latin-1 (old AVIs) are read with their undecodable bytes replaced, not refused."""
    source = str(tmp_path / "holiday.mov")
    tags = {"title": "Vacances à Nice", "creation_time": "2025-07-14T10:00:00.000000Z",
            "location": "+43.6950+007.2650/"}
    retagged(clips["paths"]["main"], source, tags, {"language": "fra"}, encoding)
    code, lines = stylize("--content", source, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 0, lines
    with av.open(str(tmp_path / "o" / "holiday_stylized_style.mp4")) as out:
        assert {key: out.metadata.get(key) for key in tags} == dict(tags, title=title)
        assert out.metadata["encoder"].startswith("Lavf")  # ours, not the input's
        assert [stream.metadata["language"] for stream in out.streams] == ["fra", "fra"]


def test_the_audio_track_flagged_default_is_kept(stylize, clips, tmp_path):
    """A film's main language rather than its commentary, which comes first here (44.1 kHz tells them apart)."""
    main, commentary = str(tmp_path / "main.mkv"), str(tmp_path / "commentary.mkv")
    make_clip(commentary, 48, 40, frames=10, rate=fractions.Fraction(10), container="matroska")
    make_clip(main, 48, 40, frames=10, rate=fractions.Fraction(10), container="matroska", sound_rate=44100)
    film = str(tmp_path / "film.mkv")
    with av.open(commentary) as first, av.open(main) as second, av.open(film, "w") as out:
        picture = out.add_stream_from_template(first.streams.video[0])
        tracks = [out.add_stream_from_template(given.streams.audio[0]) for given in (first, second)]
        tracks[0].disposition, tracks[1].disposition = 0, av.stream.Disposition.default
        for given, track in zip((first, second), tracks):
            for packet in given.demux():
                if packet.size and (packet.stream.type == "audio" or given is first):
                    packet.stream = track if packet.stream.type == "audio" else picture
                    out.mux(packet)
    code, lines = stylize("--content", film, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 0, lines
    with av.open(str(tmp_path / "o" / "film_stylized_style.mp4")) as out:
        assert [stream.codec_context.sample_rate for stream in out.streams.audio] == [44100]


def song_with_cover_art(path):
    """An MP3 with its cover picture, which FFmpeg lists as a one-frame video stream (an "attached picture")."""
    cover = io.BytesIO()
    Image.fromarray(pattern(0, 40, 40)).save(cover, "JPEG")
    with av.open(path, "w", format="mp3") as out:
        picture = out.add_stream("mjpeg")
        picture.width = picture.height = 40
        picture.pix_fmt, picture.disposition = "yuvj420p", av.stream.Disposition.attached_pic
        sound = out.add_stream("mp3", rate=44100)
        sound.layout = "mono"
        packet = av.Packet(cover.getvalue())
        packet.stream, packet.pts, packet.dts = picture, 0, 0
        out.mux(packet)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 44100), np.float32), format="fltp", layout="mono")
        samples.sample_rate, samples.pts = 44100, 0
        out.mux(sound.encode(samples))
        out.mux(sound.encode(None))


def test_a_song_with_cover_art_is_not_a_video(stylize, clips, tmp_path):
    """Not a one-frame "damaged video" (the cover stylized, a warning, exit 1): not a video at all."""
    song = str(tmp_path / "song.mp3")
    song_with_cover_art(song)
    assert video.probe(song) is None
    code, lines = stylize("--content", song, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1 and lines == [f"error: {song}: neither an image nor a video that can be read"]


def test_an_animated_webp_above_the_decoding_limit_is_refused_before_decoding(stylize, clips, tmp_path, monkeypatch):
    """PIL decodes its whole canvas for each frame: a damaged header can announce gigabytes. (The limit is
    lowered here: a WebP canvas above Pillow's limit takes minutes to write.)"""
    path = tmp_path / "big.webp"
    make_clip(str(path), 48, 40, frames=3, audio=None, container="webp", codec="libwebp_anim")
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", lambda image: pytest.fail("a frame was decoded"))
    monkeypatch.setattr(transformer, "DECODE_MAX_PIXELS", 1000)
    code, lines = stylize("--content", path, "--style", clips["style"], "--output", tmp_path)
    assert code == 1 and len(lines) == 1 and "48x40 = 1,920 pixels, above the limit of 1,000" in lines[0], lines


def joined_recordings(folder, sizes, audio, other_stream_numbers=False):
    """Recordings joined end to end, as `cat a.ts b.ts > joined.ts` joins them: each restarts its timestamps; with
    `other_stream_numbers`, each has its streams under other numbers (PIDs), as recordings of other channels."""
    parts = []
    for index, (width, height) in enumerate(sizes):
        part = folder / f"part{index}.ts"
        options = {"mpegts_start_pid": str(0x100 * (index + 1)), "mpegts_pmt_start_pid": str(0x1000 + index),
                   "mpegts_service_id": str(index + 1)} if other_stream_numbers else None
        make_clip(str(part), width, height, frames=12, container="mpegts", audio=audio, options=options)
        parts.append(part.read_bytes())
    path = folder / "joined.ts"
    path.write_bytes(b"".join(parts))
    return str(path)


def test_reader_reads_recordings_joined_end_to_end_as_one_video(tmp_path):
    with video.VideoReader(joined_recordings(tmp_path, [(64, 48), (80, 60)], None)) as reader:
        frames = list(reader.frames())
        joined = reader.notes()
    assert [frame.shape for frame, _ in frames] == [(48, 64, 3)] * 24
    # One frame apart (MPEG-TS counts in 1/90000 s), across the join too.
    np.testing.assert_allclose(np.diff([pts for _, pts in frames]), 90000 * 1001 / 24000, atol=1)
    assert joined == ("joined recordings: 1 restart(s) of its timestamps continued, 12 frame(s) of another size "
                      "scaled to the first's")


@pytest.mark.parametrize("rotation", [0, 90])
def test_reader_deinterlaces_interlaced_frames(tmp_path, rotation):
    path = str(tmp_path / "interlaced.mp4")
    make_interlaced_clip(path, rotation=rotation)
    with av.open(path) as container:
        decoded = [(frame.pts, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    with video.VideoReader(path) as reader:
        frames = list(reader.frames())
    assert all(combing(frame) > 15 for _, frame in decoded)  # what a player would show undeinterlaced
    assert [pts for _, pts in frames] == [pts for pts, _ in decoded]
    stored = [np.rot90(frame, k=-rotation // 90) for frame, _ in frames]  # upright, turned back
    assert all(frame.shape == (64, 96, 3) for frame in stored)
    assert max(combing(frame) for frame in stored) < 2
    assert reader.notes() == "10 interlaced frame(s) deinterlaced"


def test_frames_too_small_for_the_deinterlacer_are_read_as_they_are(tmp_path):
    path = str(tmp_path / "interlaced.mp4")
    make_interlaced_clip(path, width=48, height=4, frames=3)  # bwdif refuses 4 rows
    with video.VideoReader(path) as reader:
        frames = list(reader.frames())
    assert [frame.shape for frame, _ in frames] == [(4, 48, 3)] * 3 and reader.notes() is None


def test_an_interlaced_video_is_stylized_deinterlaced(stylize, clips, tmp_path):
    make_interlaced_clip(str(tmp_path / "tv.mp4"), frames=6)
    code, lines = stylize("--content", tmp_path / "tv.mp4", "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 0, lines
    out = describe(str(tmp_path / "o" / "tv_stylized_style.mp4"))
    assert out["times"] == [fractions.Fraction(index, 25) for index in range(6)]
    assert any(line.endswith("; 6 interlaced frame(s) deinterlaced") for line in lines), lines


@pytest.mark.parametrize("sizes,audio", [([(64, 48), (64, 48)], "aac"), ([(64, 48), (80, 60)], None)])
def test_recordings_joined_end_to_end_are_stylized_as_one_video(stylize, clips, tmp_path, sizes, audio):
    code, lines = stylize("--content", joined_recordings(tmp_path, sizes, audio), "--style", clips["style"],
                          "--output", tmp_path / "o")
    assert code == 0, lines
    out = describe(str(tmp_path / "o" / "joined_stylized_style.mp4"))
    assert len(out["frames"]) == 24 and out["size"] == (64, 48)
    np.testing.assert_allclose(np.diff([float(t) for t in out["times"]]), 1001 / 24000, atol=1e-4)
    if audio:  # both recordings' sound, one after the other
        assert out["audio"][0] == "aac" and abs(out["audio"][1] - 24 * 1001 / 24000) < 0.1
    assert any("joined recordings: 1 restart(s) of its timestamps continued" in line for line in lines), lines


def test_recordings_joined_with_other_stream_numbers_are_read_to_the_first_ones_end(stylize, clips, tmp_path):
    """Streams that begin later than the file's start announced are left out, as FFmpeg leaves them out. At the
    end of such a file PyAV may raise IndexError (it did at the end of the file's video and of its sound)."""
    joined = joined_recordings(tmp_path, [(64, 48), (64, 48)], "aac", other_stream_numbers=True)
    code, lines = stylize("--content", joined, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 0, lines
    out = describe(str(tmp_path / "o" / "joined_stylized_style.mp4"))
    assert len(out["frames"]) == 12 and out["audio"][0] == "aac"


@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_sound_that_outlasts_the_frames_is_not_damage(tmp_path, container):
    """A video whose sound goes on after its last frame (music laid under a short clip) is whole, though the
    file's duration, its sound's, goes beyond its frames."""
    path = str(tmp_path / "clip")
    make_clip(path, 48, 40, frames=20, rate=fractions.Fraction(10), container=container, sound_seconds=5)
    with video.VideoReader(path) as reader:
        assert len(list(reader.frames())) == 20 and reader.problem is None
        assert reader.container.duration / av.time_base >= 4.9


def test_an_avi_with_a_dropped_frame_is_not_damage(tmp_path):
    """AVI counts time in whole frames: a slot without a frame (here the second, as where a capture dropped one)
    is an empty index entry, counted among the frames the file announces, but nothing to decode."""
    path = str(tmp_path / "clip.avi")
    make_clip(path, 48, 40, frames=10, rate=fractions.Fraction(25), container="avi", codec="mpeg4", audio="mp3")
    with video.VideoReader(path) as reader:
        stamps = [pts for _, pts in reader.frames()]
        assert reader.frames_expected == 11 and reader.problem is None
    assert stamps == [0, 2, 3, 4, 5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize("audio", [None, "aac"])
def test_truncated_video_is_stylized_as_far_as_it_decodes(stylize, clips, tmp_path, audio):
    whole = str(tmp_path / "whole.mkv")
    make_clip(whole, 48, 40, frames=30, rate=fractions.Fraction(10), audio=audio, container="matroska")
    data = open(whole, "rb").read()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    code, lines = stylize("--content", cut, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1
    warning = [line for line in lines if line.startswith("WARNING")]
    decoded = len(describe(str(tmp_path / "o" / "cut_stylized_style.mp4"))["frames"])
    assert len(warning) == 1 and f"cut.mkv is damaged: {decoded} frames decoded" in warning[0]
    assert 5 <= decoded < 30
    assert lines[-1].startswith("error: 1 damaged video(s)")


def corrupt_packet(path, index):
    """Overwrite the payload of video packet `index` with noise (the container around it stays valid)."""
    with av.open(path) as container:
        position, size = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size][index]
    data = bytearray(open(path, "rb").read())
    data[position + 2:position + size] = np.random.default_rng(index).integers(0, 256, size - 2, np.uint8).tobytes()
    open(path, "wb").write(data)


@pytest.mark.parametrize("container,audio,damage", [
    # AAC copied from MPEG-TS: MP4's filter for its ADTS headers refuses a CRC with several blocks.
    ("mpegts", "aac", lambda data: data[:1] + bytes([data[1] & 0xFE]) + data[2:6] + bytes([data[6] | 3]) + data[7:]),
    # MP3, re-encoded to AAC: a frame header with another sampling rate, which the decoder refuses,
    ("matroska", "mp3", lambda data: data[:2] + bytes([data[2] ^ 0x04]) + data[3:]),
    # and one that decodes as stereo in a mono track, which the encoder refuses.
    ("matroska", "mp3", lambda data: data[:3] + bytes([data[3] & 0x3F]) + data[4:]),
], ids=["aac copied, a bad ADTS header", "mp3, another sampling rate", "mp3, stereo in a mono track"])
def test_a_damaged_audio_packet_costs_that_packet_not_the_video(stylize, clips, tmp_path, container, audio, damage):
    whole, damaged = str(tmp_path / "whole"), str(tmp_path / "damaged")
    make_clip(whole, 48, 40, frames=20, rate=fractions.Fraction(10), audio=audio, container=container)
    remuxed(whole, damaged, container,
            lambda kind, number, data: damage(data) if (kind, number) == ("audio", 5) else None)
    code, lines = stylize("--content", damaged, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1 and lines[-1].startswith("error: 1 damaged video(s)"), lines
    warning = [line for line in lines if line.startswith("WARNING")]
    assert len(warning) == 1 and "20 frames decoded" in warning[0] and "damaged audio packet(s) skipped" in warning[0]
    out = describe(str(tmp_path / "o" / "damaged_stylized_style.mp4"))
    assert len(out["frames"]) == 20 and out["audio"][0] == "aac" and out["audio"][1] > 1.8


AAC_48K_MONO = b"\x11\x88"  # the AudioSpecificConfig of make_clip's sound: AAC LC, 48 kHz (index 3), mono
SAMPLE_RATE_48K = b"\xb5\x88" + struct.pack(">d", 48000.0)  # Matroska's SamplingFrequency element
DAMAGED_AUDIO_HEADERS = {
    "no codec": ("mp4", {b"mp4a": b"zzzz", b"esds": b"xxxx"}),  # AAC's sample entry, unknown
    "no sample rate": ("mkv", {AAC_48K_MONO: b"\x16\x88",  # sampling index 13: none
                               SAMPLE_RATE_48K: b"\xb5\x88" + struct.pack(">d", 0.0)}),
}


@pytest.mark.parametrize("damage", DAMAGED_AUDIO_HEADERS)
def test_an_audio_track_that_cannot_be_read_is_left_out_with_a_warning(stylize, clips, tmp_path, damage):
    extension, replacements = DAMAGED_AUDIO_HEADERS[damage]
    whole, damaged = tmp_path / f"whole.{extension}", tmp_path / f"damaged.{extension}"
    make_clip(str(whole), 48, 40, frames=10, rate=fractions.Fraction(10))
    data = whole.read_bytes()
    for old, new in replacements.items():
        assert data.count(old) == 1
        data = data.replace(old, new)
    damaged.write_bytes(data)
    code, lines = stylize("--content", damaged, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1 and any("its sound is left out: its audio track cannot be read" in line for line in lines), lines
    out = describe(str(tmp_path / "o" / "damaged_stylized_style.mp4"))
    assert len(out["frames"]) == 10 and out["audio"] is None


def test_a_video_track_no_codec_reads_is_one_line(stylize, clips, tmp_path):
    whole, damaged = tmp_path / "whole.mp4", tmp_path / "damaged.mp4"
    make_clip(str(whole), 48, 40, frames=10, audio=None)
    data = whole.read_bytes()
    entry, configuration = data.rfind(b"avc1"), data.find(b"avcC")  # H.264's sample entry (after the file type's)
    damaged.write_bytes(data[:entry] + b"zzzz" + data[entry + 4:configuration] + b"xxxx" + data[configuration + 4:])
    code, lines = stylize("--content", damaged, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1 and len(lines) == 1 and "a video without any decodable frame" in lines[0], lines


def test_a_damaged_packet_costs_one_frame_not_the_rest(tmp_path):
    path = str(tmp_path / "damaged.mp4")
    make_clip(path, 64, 48, frames=30, rate=fractions.Fraction(10), audio=None)
    corrupt_packet(path, 12)
    with video.VideoReader(path) as reader:
        frames = list(reader.frames())
    assert len(frames) == 29  # stopping at the first error (as before) kept 10
    assert reader.damaged_packets == 1 and "1 damaged packet(s) skipped" in reader.problem


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_interruption_leaves_no_file_and_says_so(weight_files, clips, tmp_path, sent):
    """Ctrl-C, SIGTERM (kill, Slurm pre-emption, docker stop) or SIGUSR1 (what a job script made for training
    sends before a time limit; its default action left the temporary behind), mid-video, sent to the whole
    process group as a terminal sends it: one line, nothing left behind.

    The one test of test_video.py in a child process: the exit code and signals as the shell sees them.
    A short run of the same command first compiles what the video needs (on a cold Jittor cache), so
    that the signal lands mid-video: during a compilation Jittor's compiler processes, which share the
    terminal's process group, add their own lines.
    """
    vgg, decoder, mcc = weight_files
    command = [sys.executable, os.path.join(REPO, "test_video.py"), "--vgg_path", vgg, "--decoder_path", decoder,
               "--transform_path", mcc, "--style", clips["style"], "--batch_size", "1"]
    short_clip, long_clip = str(tmp_path / "short.mp4"), str(tmp_path / "long.mp4")
    make_clip(short_clip, 64, 48, frames=3, audio=None)
    subprocess.run(command + ["--content", short_clip, "--output", str(tmp_path / "warm-up")], cwd=REPO, check=True,
                   capture_output=True)
    make_clip(long_clip, 64, 48, frames=400, audio=None)
    out = tmp_path / "o"
    process = subprocess.Popen(command + ["--content", long_clip, "--output", str(out)],
                               cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (out.exists() and any(p.name.startswith(".tmp-") for p in out.iterdir())):
        assert time.time() < deadline and process.poll() is None, "the output never started"
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(process.pid, sent)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 128 + sent
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert "SIGCHLD" not in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    monkeypatch.setattr(cli.secrets, "token_hex", lambda n: "predictable")
    os.symlink(victim, tmp_path / ".tmp-predictable-out.mp4")
    with pytest.raises(cli.UserError, match="cannot write there"):
        cli.write_atomically(str(tmp_path / "out.mp4"), b"stylized")
    assert victim.read_text() == "precious"


def frameless_video(path):
    """An AVI with a video stream and no frame at `path`."""
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
        container.start_encoding()
    return path


def bad_input_cases(clips, tmp):
    text = tmp / "notes.mp4"
    text.write_text("not a video\n")
    tiny = tmp / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny)
    truncated = tmp / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:4000])
    photo = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(pattern(1, 40, 30))).save(photo)
    photo = photo.getvalue()
    cut_photo, damaged_photo = tmp / "cut.heic", tmp / "damaged.heic"
    cut_photo.write_bytes(photo[:-100])  # libheif's message for it ends in a newline: still one line
    data = photo.find(b"mdat") + 4
    damaged_photo.write_bytes(photo[:data] + b"\x5a" + photo[data + 1:])  # the first NAL unit far too long
    empty = frameless_video(tmp / "empty.avi")
    blocked = tmp / "blocked"
    blocked.write_text("a file where the output folder should be")
    tall = tmp / "tall.png"
    Image.fromarray(np.zeros((300, 12, 3), np.uint8)).save(tall)
    os.mkfifo(tmp / "fifo.mp4")
    frames = tmp / "frames"
    numbered_pictures(frames, [1, 2], name="frame_%04d.png")
    main, style = clips["paths"]["main"], clips["style"]
    return {
        "missing content": (["--content", tmp / "nope.mp4", "--style", style], "nope.mp4: no such file"),
        "missing style": (["--content", main, "--style", tmp / "nope.jpg"], "nope.jpg: no such file"),
        "content is a folder": (["--content", tmp, "--style", style],
                                f"--content {tmp}: a folder; give a folder of inputs with --content_dir"),
        "content_dir is a file": (["--content_dir", main, "--style", style], f"--content_dir {main}: not a folder"),
        "a fifo": (["--content", tmp / "fifo.mp4", "--style", style], "not a regular file"),
        "neither image nor video": (["--content", text, "--style", style], "neither an image nor a video"),
        "truncated picture": (["--content", truncated, "--style", style], "not an image that can be read"),
        "truncated HEIF photo": (["--content", cut_photo, "--style", style], "not an image that can be read"),
        "damaged HEIF photo": (["--content", damaged_photo, "--style", style], "not an image that can be read"),
        "video without frames": (["--content", empty, "--style", style], "without any decodable frame"),
        "too small": (["--content", tiny, "--style", style, "--content_size", "0"],
                      "8x8 is too small; the encoder needs at least 9x9"),
        "alpha": (["--content", main, "--style", style, "--alpha", "1.5"], "--alpha 1.5: must be within [0, 1]"),
        "alpha nan": (["--content", main, "--style", style, "--alpha", "nan"], "--alpha nan: must be within"),
        "batch size": (["--content", main, "--style", style, "--batch_size", "0"],
                       "--batch_size 0: must be at least 1"),
        "weights count": (["--content", main, "--style", f"{style},{style}", "--style_interpolation_weights", "1"],
                          "has 1 weights for 2 styles"),
        "weights nan": (["--content", main, "--style", f"{style},{style}", "--style_interpolation_weights", "nan,1"],
                        "must be finite"),
        "weights inf": (["--content", main, "--style", f"{style},{style}", "--style_interpolation_weights", "inf,1"],
                        "must be finite"),
        "output not writable": (["--content", main, "--style", style, "--output", blocked / "sub"],
                                "cannot write there"),
        "output is a file": (["--content", main, "--style", style, "--output", blocked],
                             f"--output {blocked}: a file, not a folder"),
        "style is a video": (["--content", main, "--style", main], "a style must be an image"),
        "unknown flag": (["--content", main, "--style", style, "--colour"], "unrecognized arguments: --colour"),
        "sequence without pictures": (["--content", tmp / "%05d.png", "--style", style],
                                      f"--content {tmp / '%05d.png'}: no picture in {tmp} is numbered by this pattern"),
        "sequence in a missing folder": (["--content", tmp / "none" / "%05d.png", "--style", style],
                                         "none/%05d.png: no such folder"),
        "a folder of numbered pictures": (["--content", frames, "--style", style],
                                          f"--content {frames}: a folder; give a folder of inputs with --content_dir, "
                                          f"or its pictures as a video with --content {frames / 'frame_%04d.png'}"),
        "frame rate of a video": (["--content", main, "--style", style, "--frame_rate", "24"],
                                  "--frame_rate times an image sequence"),
        "frame rate zero": (["--content", main, "--style", style, "--frame_rate", "0"],
                            "--frame_rate 0: must be within [1/1000, 1000]"),
        "frame rate too low": (["--content", main, "--style", style, "--frame_rate", "1e-9"],
                               "--frame_rate 0: must be within [1/1000, 1000]"),
        "frame rate not a number": (["--content", main, "--style", style, "--frame_rate", "fast"],
                                    "--frame_rate: invalid frame_rate value: 'fast'"),
        "style too large": (["--content", tall, "--style", style, "--content_size", "0", "--max_pixels", "20000"],
                            "style " + style + ": the image resized to a shorter side of 300 is 400x300 = 120,000 "
                            "pixels, above the limit of 20,000 (--max_pixels raises it; --content_size/--style_size "
                            "shrink it)"),
    }


CASES = ["missing content", "missing style", "content is a folder", "content_dir is a file", "a fifo",
         "neither image nor video", "truncated picture", "truncated HEIF photo", "damaged HEIF photo",
         "video without frames", "too small", "alpha", "alpha nan", "batch size",
         "weights count", "weights nan", "weights inf", "output not writable", "output is a file", "style is a video",
         "unknown flag", "style too large", "sequence without pictures", "sequence in a missing folder",
         "a folder of numbered pictures", "frame rate of a video", "frame rate zero", "frame rate too low",
         "frame rate not a number"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(stylize, clips, tmp_path, case):
    args, expected = bad_input_cases(clips, tmp_path)[case]
    out = tmp_path / "out"
    if "--output" not in args:
        args = args + ["--output", out]
    code, lines = stylize(*args)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not out.exists() or list(out.iterdir()) == []


@pytest.fixture(scope="module")
def big_picture(tmp_path_factory):
    """A 6000 × 6000 picture (a few hundred kB of PNG): above the default pixel limit and Jittor's pooling."""
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.new("RGB", (6000, 6000), (90, 120, 200)).save(path)
    return path


def test_a_large_photo_is_stylized_at_the_size_asked_for(stylize, clips, big_picture, tmp_path):
    """A camera's or a phone's photo (24 to 50 megapixels) as the content, at the default --content_size of 512,
    and as the style, sized to the content's height: the original stylizes both, and the pixel limit is that of
    the network's input."""
    code, lines = stylize("--content", big_picture, "--style", big_picture, "--output", tmp_path)
    assert code == 0, lines
    assert Image.open(tmp_path / "big_stylized_big.jpg").size == (512, 512)


def test_a_picture_stylized_above_the_pixel_limit_is_refused(stylize, clips, big_picture, tmp_path):
    code, lines = stylize("--content", big_picture, "--style", clips["style"], "--content_size", "0",
                          "--output", tmp_path)
    assert code == 1 and len(lines) == 1
    assert lines[0].endswith("is 6000x6000 = 36,000,000 pixels, above the limit of 16,777,216 (--max_pixels "
                             "raises it; --content_size/--style_size shrink it)")


def test_a_decompression_bomb_stays_a_picture_and_is_refused_before_decoding(stylize, clips, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (14000, 14000)).save(bomb)  # 190 kB; Pillow itself refuses it as a bomb
    assert video.probe(str(bomb)) == "image"
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda image: pytest.fail("the bomb was decoded"))
    code, lines = stylize("--content", bomb, "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1 and len(lines) == 1
    assert lines[0].endswith("the picture is 14000x14000 = 196,000,000 pixels, above the limit of 178,956,970, "
                             "Pillow's against decompression bombs (the original's too)")


@pytest.mark.parametrize("height,width,batch_size,frames", [
    (360, 640, None, 4), (720, 1280, None, 1), (1080, 1920, None, 1), (2160, 3840, None, 1), (48, 64, None, 4),
    (1080, 1920, 8, 8), (5792, 5792, 3, 1)])
def test_frames_per_pass(height, width, batch_size, frames, monkeypatch):
    """By default up to 4 frames, as many as fit in 1280 × 720 pixels: on the CPU a pass of several large frames
    is slower than one frame after another, and takes memory in proportion (docs/history.md). --batch_size is
    obeyed as far as Jittor's pooling allows (and memory, below; here a machine of 1 TB)."""
    monkeypatch.setattr(backend, "memory_limit", lambda: 1e12)
    assert test_video.frames_per_pass(height, width, batch_size, "content") == frames


def test_a_pass_that_memory_cannot_hold_is_refused_or_made_smaller(stylize, clips, tmp_path, monkeypatch):
    """On the CPU a picture, a frame or a style larger than the memory this process may use is one line (the kernel
    killed such a run, minutes later, without a word); frames go fewer to a pass where more would not fit."""
    monkeypatch.setattr(backend, "memory_limit", lambda: 0.8e9)
    picture = tmp_path / "small.png"
    Image.fromarray(pattern(1, 40, 30)).save(picture)
    code, lines = stylize("--content", picture, "--style", clips["style"], "--content_size", "1000",
                          "--output", tmp_path / "o")
    assert code == 1 and lines == [f"error: content {picture}: 1333x1000 takes at least 1.0 GB of memory to stylize "
                                   "on the CPU, and this process may use 0.8 GB (--max_pixels raises it; "
                                   "--content_size/--style_size shrink it)"]
    code, lines = stylize("--content", picture, "--style", clips["style"], "--style_size", "1000",
                          "--output", tmp_path / "o")
    assert code == 1 and lines[0].startswith(f"error: style {clips['style']}: 1333x1000 takes at least 1.0 GB")
    assert test_video.frames_per_pass(360, 640, 8, "content") == 3  # (0.8 GB − 0.3) / (0.55 kB × 640 × 360) frames
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")  # two ranks of mpirun on this node: half each
    with pytest.raises(test_video.InputError, match=r"this process may use 0.4 GB \(1/2 of what this node gives"):
        test_video.frames_per_pass(360, 640, 8, "content")


def test_the_memory_estimate_is_at_most_what_a_stylization_takes(clips, weight_files, tmp_path):
    """The estimate refuses only what cannot fit: a 1080p picture with a 512² style, the least memory per pixel
    measured (in a process of its own, whose peak resident size its parent reads), takes at least that."""
    picture = tmp_path / "hd.png"
    Image.fromarray(pattern(1, 1920, 1080)).save(picture)
    vgg, decoder, mcc = weight_files
    argv = ["--content", picture, "--style", clips["style"], "--content_size", "0", "--style_size", "512",
            "--output", tmp_path / "o", "--vgg_path", vgg, "--decoder_path", decoder, "--transform_path", mcc]
    peak = peak_memory_of_script("test_video.py", *argv)
    assert test_video.PASS_BYTES + test_video.PASS_BYTES_PER_PIXEL * 1920 * 1080 <= peak < 4e9, peak


def test_an_input_too_large_for_the_gpus_memory_costs_its_own_output_in_one_line(stylize, clips, tmp_path,
                                                                                 monkeypatch):
    """Jittor's error where the GPU's memory is short (a fatal log of the failed operator, `JITTOR_GPU_MEMORY_ERROR`)
    ended the run in a traceback. Here a pass above 3000 pixels meets it; a smaller input is still stylized."""
    stylize_on_a_small_gpu = net.stylize

    def stylize_within_3000_pixels(encoder, decoder, mcc_module, content, *rest):
        if content.shape[2] * content.shape[3] > 3000:
            raise RuntimeError(JITTOR_GPU_MEMORY_ERROR)
        return stylize_on_a_small_gpu(encoder, decoder, mcc_module, content, *rest)

    monkeypatch.setattr(net, "stylize", stylize_within_3000_pixels)
    large, small = tmp_path / "large.png", tmp_path / "small.png"
    Image.fromarray(pattern(1, 80, 60)).save(large)
    Image.fromarray(pattern(2, 40, 30)).save(small)
    out = tmp_path / "out"
    code, lines = stylize("--content", f"{large},{small}", "--style", clips["style"], "--content_size", "0",
                          "--output", out)
    too_large = (f"content {large}: too large, with its style, for the GPU's memory: use a smaller --content_size "
                 "or --style_size")
    assert code == 1 and lines == [f"skipping {out / 'large_stylized_style.jpg'}: {too_large}",
                                   f"{small} -> {out / 'small_stylized_style.jpg'}",
                                   f"error: 1 of 2 output(s) not made: {out / 'large_stylized_style.jpg'}"]
    assert sorted(os.listdir(out)) == ["small_stylized_style.jpg"]
    video_ = clips["paths"]["main"]
    code, lines = stylize("--content", video_, "--style", clips["style"], "--output", out)
    assert code == 1 and lines == [f"error: content {video_}: too large, with its style, for the GPU's memory: use a "
                                   "smaller --content_size or --style_size, or --batch_size 1"]
    assert sorted(os.listdir(out)) == ["small_stylized_style.jpg"]  # no unfinished video left


def test_other_errors_of_jittor_are_not_taken_for_a_gpu_short_of_memory():
    with pytest.raises(RuntimeError, match="Execute fused operator"):
        with backend.gpu_memory_short_as(cli.UserError("short of memory")):
            raise RuntimeError(JITTOR_GPU_MEMORY_ERROR.replace("Unable to alloc cuda device memory", "Check failed"))


def test_a_frame_beyond_jittors_pooling_is_one_line(stylize, clips, big_picture, tmp_path):
    code, lines = stylize("--content", big_picture, "--style", clips["style"], "--content_size", "0",
                          "--max_pixels", 40_000_000, "--output", tmp_path)
    assert code == 1 and len(lines) == 1
    assert "6000x6000 is larger than Jittor can pool (at most 33,554,431 pixels)" in lines[0]


def test_missing_weights_say_where_to_get_them(clips, tmp_path, run_main, monkeypatch):
    """The default paths are relative to the working folder, as the original's; run from one without them (the
    repository's own holds the published weights once `make demo` has run)."""
    monkeypatch.chdir(tmp_path)
    code, lines = run_main(test_video, "--content", clips["paths"]["main"], "--style", clips["style"],
                           "--output", tmp_path / "o")
    assert code == 1 and len(lines) == 1
    assert "no such file" in lines[0] and "github.com/diyiiyiii/MCCNet" in lines[0] and "experiments/" in lines[0]


def test_wrong_weights_say_which_network(weight_files, clips, tmp_path, run_main):
    vgg, decoder, mcc = weight_files
    code, lines = run_main(test_video, "--vgg_path", vgg, "--decoder_path", mcc, "--transform_path", mcc,
                           "--content", clips["paths"]["main"], "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: {mcc}: not the decoder weights")
    assert "github.com" not in lines[0]  # the files exist: where to download them is not the problem
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_a_damaged_checkpoint_of_ones_own_training_is_not_a_download_problem(weight_files, clips, tmp_path,
                                                                             run_main):
    vgg, decoder, mcc = weight_files
    damaged = tmp_path / "decoder_iter_5000.pkl"
    weights.write_state_dict(weights.read_state_dict(decoder), str(damaged))
    damaged.write_bytes(damaged.read_bytes()[:1000])
    code, lines = run_main(test_video, "--vgg_path", vgg, "--decoder_path", damaged, "--transform_path", mcc,
                           "--content", clips["paths"]["main"], "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 1 and len(lines) == 1
    assert f"{damaged}: not a readable PyTorch or Jittor checkpoint" in lines[0] and "github.com" not in lines[0]


def test_images_of_every_mode_and_a_folder(stylize, clips, tmp_path):
    folder = tmp_path / "content"
    folder.mkdir()
    base = pattern(1, 40, 30)
    Image.fromarray(base).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(base).convert("L").save(folder / "grey.png")
    Image.fromarray(base).convert("P").save(folder / "palette.gif")
    pillow_heif.from_pillow(Image.fromarray(base)).save(folder / "phone.heic")  # a phone's photo
    Image.fromarray(base).save(folder / "web.avif")
    # Pictures with further images that are not frames (of another size here, 20×16): a phone's JPEG with an HDR
    # gain map (MPO's format), a scan's second page, a phone's HEIF burst.
    second = Image.new("RGB", (20, 16))
    Image.fromarray(base).save(folder / "gain_map.jpg", "MPO", save_all=True, append_images=[second.convert("L")])
    Image.fromarray(base).save(folder / "scan.tiff", save_all=True, append_images=[second])
    burst = pillow_heif.from_pillow(Image.fromarray(base))
    burst.add_from_pillow(second)
    burst.save(folder / "burst.heic")
    # A flattened Photoshop file, which PIL counts as no layers: 8-bit RGB, raw planes.
    planes = np.moveaxis(base, -1, 0).tobytes()
    (folder / "flat.psd").write_bytes(b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 30, 40, 8, 3) + bytes(12)
                                      + bytes(2) + planes)
    (folder / "readme.txt").write_text("not an image")
    code, lines = stylize("--content_dir", folder, "--style", clips["style"], "--output", tmp_path / "o",
                          "--content_size", "32")
    assert code == 0, lines
    assert any("skipping" in line and "readme.txt" in line for line in lines)
    names = sorted(os.listdir(tmp_path / "o"))
    assert names == ["burst_stylized_style.jpg", "flat_stylized_style.jpg", "gain_map_stylized_style.jpg",
                     "grey_stylized_style.jpg",
                     "palette_stylized_style.jpg", "phone_stylized_style.jpg", "rgba_stylized_style.jpg",
                     "scan_stylized_style.jpg", "web_stylized_style.jpg"]
    # Shorter side resized to --content_size 32: 40×30 → 42×32 (the first image; the second would give 40×32).
    assert all(Image.open(tmp_path / "o" / n).size == (42, 32) for n in names)


@pytest.mark.parametrize("extension", ["gif", "webp", "png"])
def test_an_animated_picture_as_a_style_is_its_first_frame(stylize, clips, tmp_path, extension):
    """As the original, which opened the style with PIL: a video file is no style, an animated GIF, WebP or PNG
    is its first frame (said in a line)."""
    first, second = pattern(2, 40, 30), pattern(5, 40, 30)[::-1].copy()
    animated = tmp_path / f"animated.{extension}"
    Image.fromarray(first).save(animated, save_all=True, append_images=[Image.fromarray(second)], duration=100)
    assert video.probe(str(animated)) == "video"
    still = tmp_path / "still.png"
    transformer.load_image(str(animated)).save(still)
    content = tmp_path / "content.png"
    Image.fromarray(pattern(1, 40, 30)).save(content)
    outputs = []
    for style in (animated, still):
        code, lines = stylize("--content", content, "--style", style, "--output", tmp_path / style.stem,
                              "--save_ext", ".png")
        assert code == 0, lines
        outputs.append(np.asarray(Image.open(tmp_path / style.stem / f"content_stylized_{style.stem}.png")))
        if style == animated:
            assert f"--style {animated}: an animated picture; its first frame is the style" in lines
    assert np.array_equal(*outputs)
    code, lines = stylize("--content", content, "--style", clips["paths"]["main"], "--output", tmp_path / "v")
    assert code == 1 and lines == [f"error: --style {clips['paths']['main']}: a style must be an image, not a video"]


def test_a_bad_input_among_several_costs_its_own_outputs_only(stylize, clips, tmp_path):
    """Hours of a folder's work do not end at one unusable file: it is skipped with its reason, the others are
    stylized, and the run ends with exit 1 naming what was not made."""
    folder, out = tmp_path / "content", tmp_path / "o"
    folder.mkdir()
    Image.fromarray(pattern(1, 40, 30)).save(folder / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "tiny.png")
    frameless_video(folder / "empty.avi")
    os.symlink(clips["paths"]["main"], folder / "clip.mp4")
    code, lines = stylize("--content_dir", folder, "--style", clips["style"], "--content_size", "0", "--output", out)
    assert code == 1
    assert sorted(os.listdir(out)) == ["a_stylized_style.jpg", "clip_stylized_style.mp4"]
    skipped = [line for line in lines if line.startswith("skipping")]
    assert skipped == [f"skipping {out / 'empty_stylized_style.mp4'}: {folder / 'empty.avi'}: a video without "
                       "any decodable frame (empty)",
                       f"skipping {out / 'tiny_stylized_style.jpg'}: content {folder / 'tiny.png'}: 8x8 is too "
                       "small; the encoder needs at least 9x9 pixels"]
    assert lines[-1] == (f"error: 2 of 4 output(s) not made: {out / 'empty_stylized_style.mp4'}, "
                         f"{out / 'tiny_stylized_style.jpg'}")


def test_skip_existing_resumes_an_interrupted_run(stylize, clips, tmp_path):
    folder, out = tmp_path / "content", tmp_path / "o"
    folder.mkdir()
    for seed in (1, 2, 3):
        Image.fromarray(pattern(seed, 40, 30)).save(folder / f"{seed}.png")
    out.mkdir()
    (out / "1_stylized_style.jpg").write_bytes(b"made before")
    code, lines = stylize("--content_dir", folder, "--style", clips["style"], "--output", out, "--content_size", "32",
                          "--skip_existing")
    assert code == 0 and lines[0] == "--skip_existing: 1 of 3 output(s) exist and are kept", lines
    assert (out / "1_stylized_style.jpg").read_bytes() == b"made before"
    assert sorted(os.listdir(out)) == ["1_stylized_style.jpg", "2_stylized_style.jpg", "3_stylized_style.jpg"]
    code, lines = stylize("--content_dir", folder, "--style", clips["style"], "--output", out, "--skip_existing")
    assert code == 0 and lines == ["--skip_existing: 3 of 3 output(s) exist and are kept"]
    code, lines = stylize("--content_dir", folder, "--style", clips["style"], "--output", out, "--content_size", "32")
    assert code == 0 and Image.open(out / "1_stylized_style.jpg").size == (42, 32)  # without the flag: made again


@needs_mpi
def test_mpirun_ranks_share_a_folder_and_a_bad_input_ends_no_others_work(weight_files, clips, tmp_path):
    """Each rank makes every other output. Rank 1's one input is unusable and it is done at once, while rank 0
    still stylizes a video for seconds: mpirun ends the whole job when a rank exits with an error, but that exit
    comes after Jittor's MPI_Finalize, which waits for every rank."""
    folder, out = tmp_path / "content", tmp_path / "o"
    folder.mkdir()
    Image.fromarray(pattern(1, 40, 30)).save(folder / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "b.png")
    make_clip(str(folder / "c.mp4"), 192, 144, frames=16)
    vgg, decoder, mcc = weight_files
    result = mpirun(2, "test_video.py", "--vgg_path", vgg, "--decoder_path", decoder, "--transform_path", mcc,
                    "--content_dir", folder, "--style", clips["style"], "--content_size", "0", "--output", out,
                    timeout=180)
    assert result.returncode != 0
    assert sorted(os.listdir(out)) == ["a_stylized_style.jpg", "c_stylized_style.mp4"], result.stderr
    made = sorted(line.split(" -> ")[0] for line in result.stderr.splitlines() if " -> " in line)
    assert made == [str(folder / "a.png"), str(folder / "c.mp4")], result.stderr  # each by one rank
    error = f"error: 1 of 1 output(s) not made: {out / 'b_stylized_style.jpg'}"
    assert result.stderr.index(error) < result.stderr.index(f"{folder / 'c.mp4'} -> "), result.stderr  # rank 1 first


@needs_mpi
def test_mpirun_ranks_report_an_error_that_they_all_meet_once(weight_files, clips, tmp_path):
    """Every rank checks the flags and inputs before it takes its share of the outputs: an error there is every
    rank's, and was printed once per rank (on eight GPUs, eight lines)."""
    vgg, decoder, mcc = weight_files
    missing = tmp_path / "missing.mp4"
    result = mpirun(2, "test_video.py", "--vgg_path", vgg, "--decoder_path", decoder, "--transform_path", mcc,
                    "--content", missing, "--style", clips["style"], "--output", tmp_path / "o", timeout=120)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if "error:" in line] == [f"error: --content {missing}: "
                                                                                 "no such file"], result.stderr


def test_inputs_that_share_a_name_get_distinct_outputs(stylize, clips, tmp_path):
    folder = tmp_path / "content"
    folder.mkdir()
    Image.fromarray(pattern(1, 40, 30)).save(folder / "a.png")
    Image.fromarray(pattern(2, 40, 30)).save(folder / "a.jpg")
    code, lines = stylize("--content_dir", folder, "--style", clips["style"], "--output", tmp_path / "o",
                          "--content_size", "32", "--save_ext", ".png")
    assert code == 0, lines
    outputs = {name: np.asarray(Image.open(tmp_path / "o" / name)) for name in sorted(os.listdir(tmp_path / "o"))}
    assert list(outputs) == ["a_jpg_stylized_style.png", "a_png_stylized_style.png"]
    assert not np.array_equal(*outputs.values())


def test_a_file_whose_name_holds_a_comma_is_one_input(stylize, tmp_path):
    """--content and --style take comma-separated lists; a name that exists with its commas is one file."""
    content, style = tmp_path / "Paris, 2019.png", tmp_path / "Monet, water lilies.png"
    Image.fromarray(pattern(1, 40, 30)).save(content)
    Image.fromarray(pattern(2, 40, 30)).save(style)
    code, lines = stylize("--content", content, "--style", style, "--output", tmp_path / "o", "--content_size", "32",
                          "--save_ext", ".png")
    assert code == 0, lines
    assert os.listdir(tmp_path / "o") == ["Paris, 2019_stylized_Monet, water lilies.png"]


def test_image_sequences_of_one_folder_name_get_distinct_outputs(stylize, clips, tmp_path):
    """Sintel has clean/alley_1 and final/alley_1: named with the folder above theirs."""
    sequences = [numbered_pictures(tmp_path / kind, range(1, 3), name="frame_%04d.png") for kind in ("clean", "final")]
    sequences += [numbered_pictures(tmp_path / kind / "alley_1", range(1, 3), name="frame_%04d.png")
                  for kind in ("clean", "final")]
    code, lines = stylize("--content", ",".join(sequences), "--style", clips["style"], "--output", tmp_path / "o")
    assert code == 0, lines
    assert sorted(os.listdir(tmp_path / "o")) == ["clean_alley_1_stylized_style.mp4", "clean_stylized_style.mp4",
                                                  "final_alley_1_stylized_style.mp4", "final_stylized_style.mp4"]


def test_an_input_is_never_overwritten(stylize, clips, tmp_path):
    folder = tmp_path / "content"
    folder.mkdir()
    Image.fromarray(pattern(1, 40, 30)).save(folder / "x.png")
    Image.fromarray(pattern(2, 40, 30)).save(folder / "x_stylized_style.png")  # the user's own picture
    before = (folder / "x_stylized_style.png").read_bytes()
    code, lines = stylize("--content_dir", folder, "--style", clips["style"], "--output", folder,
                          "--content_size", "32", "--save_ext", ".png")
    assert code == 1 and len(lines) == 1 and "is one of the inputs" in lines[0]
    assert (folder / "x_stylized_style.png").read_bytes() == before


def test_save_frames_where_a_file_has_the_folders_name(stylize, clips, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "main_stylized_style_frames").write_text("mine")
    code, lines = stylize("--content", clips["paths"]["main"], "--style", clips["style"], "--output", out,
                          "--save_frames")
    assert code == 1 and len(lines) == 1 and "frames folder cannot be made" in lines[0]
    assert sorted(os.listdir(out)) == ["main_stylized_style_frames"]


@pytest.mark.parametrize("kind", ["video", "image"])
def test_a_full_disk_is_one_line_and_leaves_nothing(stylize, clips, full_disk, tmp_path, kind):
    if kind == "video":
        content = tmp_path / "big.mp4"
        make_clip(str(content), 320, 240, frames=30, audio=None)  # stylized: more than the 64 kB disk holds
    else:
        content = tmp_path / "noise.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 600, 3), np.uint8)).save(content)
    code, lines = stylize("--content", content, "--style", clips["style"], "--output", full_disk,
                          "--save_ext", ".png", "--content_size", "0")
    assert code == 1 and len(lines) == 1
    assert "No space left on device" in lines[0] and "nothing was written" in lines[0]
    assert os.listdir(full_disk) == []


class NoiseStylizer:
    """The network's place taken by noise, which x264 cannot compress: a small disk fills at once."""

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def set_styles(self, styles):
        pass

    def __call__(self, frames):
        return [self.rng.integers(0, 256, frame.shape, np.uint8) for frame in frames]


@pytest.mark.parametrize("frames", [8, 200], ids=["at the encoder's flush", "while frames are written"])
def test_a_disk_that_fills_at_any_point_of_a_video_is_one_line(clips, full_disk, tmp_path, frames):
    # x264 holds frames back (at the medium preset a lookahead of 40, and more with more threads): 8 frames
    # reach the disk only when the encoder is flushed at the end, 200 while frames are still being written.
    # Either way FFmpeg reports the failed write again when the broken file is closed.
    content = tmp_path / "noise.mp4"
    make_clip(str(content), 320, 240, frames=frames, audio=None)
    args = test_video.parse_args(["--content", str(content), "--style", clips["style"]])
    with pytest.raises(cli.UserError, match="No space left on device.*nothing was written"):
        test_video.stylize_video(str(content), [clips["style"]], str(full_disk / "out.mp4"), NoiseStylizer(), args)
    assert os.listdir(full_disk) == []


def test_half_on_the_cpu_is_one_clear_line(stylize, clips, tmp_path):
    out = tmp_path / "out"
    code, lines = stylize("--content", clips["paths"]["main"], "--style", clips["style"], "--output", out,
                          "--half", "--use_cuda", "0")
    assert code == 1
    assert lines == ["error: --half runs on the GPU only (Jittor has no fast float16 convolutions on the CPU); "
                     "without it the CPU computes in float32"]
    assert not out.exists() or list(out.iterdir()) == []
