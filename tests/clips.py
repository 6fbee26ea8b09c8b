"""Small test videos made with PyAV: moving patterns with a 440 Hz tone."""
import fractions

import av
import numpy as np


def pattern(index, width, height):
    """A frame that changes with `index` and whose top-left corner is marked green."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([(x * 4 + index * 9) % 256, (y * 3) % 256, ((x + y) * 2 + index * 5) % 256], axis=-1)
    frame = frame.astype(np.uint8)
    frame[: max(2, height // 5), : max(2, width // 5)] = (0, 255, 0)
    return frame


def make_clip(path, width=64, height=48, frames=12, rate=fractions.Fraction(24000, 1001), audio="aac",
              rotation=0, variable_rate=False, container=None, codec="libx264", pix_fmt="yuv420p", colour=None,
              aspect=None, sound_seconds=None, sound_start=0, sound_rate=48000, options=None,
              untagged_matrix=None):
    """Write a clip; returns the list of frame timestamps (in the video time base) it wrote. `colour`: (matrix,
    primaries, transfer), FFmpeg's numbers, to encode with and tag the clip with (default: untagged, encoded with
    swscale's default matrix, BT.601, or with `untagged_matrix`); `aspect`: the width / height of its pixels
    (anamorphic video; default square); `sound_seconds`: how long its sound lasts (default: as long as its frames);
    `sound_start`: seconds from its first frame to its sound; `sound_rate`: its samples a second; `options`: the
    muxer's."""
    out = av.open(path, "w", format=container, options=options)
    stream = out.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if rotation:
        stream.set_display_rotation(rotation)
    if aspect:
        stream.codec_context.sample_aspect_ratio = aspect
    time_base = fractions.Fraction(1, 90000) if variable_rate else 1 / rate
    stream.codec_context.time_base = time_base
    if colour:
        context = stream.codec_context
        context.colorspace, context.color_primaries, context.color_trc = colour
    sound = None
    if audio:
        sound = out.add_stream(audio, rate=sound_rate)
        sound.layout = "mono"
    stamps, pts = [], 0
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(pattern(index, width, height), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        if colour or untagged_matrix:
            frame.colorspace = colour[0] if colour else untagged_matrix
        stamps.append(pts)
        pts += (3000 if index % 2 else 6000) if variable_rate else 1
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    if sound is not None:
        seconds = sound_seconds or float(pts * time_base)
        t = np.arange(int(sound_rate * seconds)) / sound_rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sound_rate, round(sound_rate * sound_start)
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    out.close()
    return stamps


def remuxed(source, path, container, damage):
    """Copy `source` to `path` packet by packet; damage(stream type, packet number in its stream, data) gives
    a packet's new data, or None to keep it."""
    with av.open(source) as given, av.open(path, "w", format=container) as out:
        streams = {stream.index: out.add_stream_from_template(stream) for stream in given.streams}
        counts = {}
        for packet in given.demux():
            if not packet.size:
                continue
            kind, index = packet.stream.type, packet.stream.index
            counts[kind] = counts.get(kind, 0) + 1
            data = damage(kind, counts[kind], bytes(packet))
            if data is not None:
                damaged = av.Packet(data)
                damaged.pts, damaged.dts, damaged.time_base = packet.pts, packet.dts, packet.time_base
                packet = damaged
            packet.stream = streams[index]
            out.mux(packet)


def shifted(source, path, seconds):
    """`source` remuxed to `path` with every timestamp `seconds` later. Later: a recording cut from a broadcast,
    which starts where the broadcast's clock stood. Earlier: what `ffmpeg -ss <-seconds> -i source -c copy path`
    writes, the video from the keyframe before the cut on, with an edit list in an MP4 that has the frames before
    the cut decoded but not shown; the sound before it is dropped."""
    with av.open(source) as given, av.open(path, "w") as out:
        streams = {stream.index: out.add_stream_from_template(stream) for stream in given.streams}
        for packet in given.demux():
            if packet.dts is None:
                continue
            shift = round(seconds / packet.time_base)
            packet.pts, packet.dts, packet.stream = packet.pts + shift, packet.dts + shift, streams[packet.stream.index]
            if packet.stream.type == "video" or packet.pts >= 0:
                out.mux(packet)


def retagged(source, path, tags, stream_tags, encoding="utf-8"):
    """`source` remuxed to `path` with the file's tags `tags` and each stream's `stream_tags`, written in
    `encoding`."""
    with av.open(source) as given, av.open(path, "w", metadata_encoding=encoding) as out:
        out.metadata.update(tags)
        streams = {}
        for stream in given.streams:
            streams[stream.index] = out.add_stream_from_template(stream)
            streams[stream.index].metadata.update(stream_tags)
        for packet in given.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)


def woven(index, width, height):
    """Frame `index` of an interlaced camera filming a white bar that moves right by 4 pixels a field: its
    even rows (the top field) show the bar at the frame's time, its odd rows half a frame later."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[0::2, 8 * index:8 * index + 16] = 255
    frame[1::2, 8 * index + 4:8 * index + 20] = 255
    return frame


def make_interlaced_clip(path, width=96, height=64, frames=10, rotation=0):
    """An interlaced H.264 clip (top field first, 25 frames/s) of `woven` frames, flagged interlaced."""
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"x264-params": "interlaced=1:tff=1"}
        if rotation:
            stream.set_display_rotation(rotation)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(woven(index, width, height), format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def combing(frame):
    """The mean grey difference of neighbouring rows: about 0 for a whole picture of `woven`'s bar, whose edges
    are vertical, and 21 for 96-pixel-wide frames woven of two fields (8 columns of 255 differ in each row).
    """
    return np.abs(np.diff(frame.astype(np.float64).mean(axis=-1), axis=0)).mean()
