"""Video in and out through PyAV (FFmpeg's libraries, shipped inside the wheel).

Reading: any container and codec FFmpeg decodes, frames turned upright per the stream's
display rotation, timestamps kept. Writing: H.264 in MP4, yuv420p (what browsers play),
the input's timestamps (variable frame rate and 24000/1001 survive), and the input's first
audio track, copied when MP4 can hold its codec and re-encoded to AAC otherwise.
"""
import fractions

import av
import numpy as np
from PIL import Image

CRF = 18  # x264 constant quality: visually lossless for most content, ~1-3 Mbit/s at 360p
PRESET = "medium"
AUDIO_COPY_CODECS = {"aac", "mp3", "alac", "ac3", "eac3"}  # what MP4 carries as it is
DEFAULT_RATE = fractions.Fraction(25)


def probe(path):
    """'image' or 'video' by the file's content (never its name), or None for neither.

    A single-frame picture is an image; an animated GIF or WebP and anything FFmpeg
    finds a video stream in is a video.
    """
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) == 1:
                return "image"
    except (OSError, ValueError, Image.DecompressionBombError):
        pass
    try:
        with av.open(path) as container:
            return "video" if container.streams.video else None
    except (av.FFmpegError, OSError, ValueError):
        return None


def upright(array, rotation):
    """Undo a display rotation (degrees counter-clockwise, as FFmpeg's display matrix gives)."""
    return np.ascontiguousarray(np.rot90(array, k=(rotation // 90) % 4)) if rotation % 360 else array


class VideoReader:
    """Demuxes one file: upright RGB frames of its first video stream, and its first audio stream's packets."""

    def __init__(self, path):
        self.path = path
        self.container = av.open(path)
        self.video = self.container.streams.video[0]
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        self.video.thread_type = "AUTO"
        self.rate = self.video.average_rate or self.video.guessed_rate or DEFAULT_RATE
        self.time_base = self.video.time_base or 1 / self.rate
        self.frames_expected = self.video.frames  # 0 when the container does not say
        self.error = None  # set when decoding stopped early on damaged data

    def packets_and_frames(self):
        """Yield ('video', HWC uint8, pts) and ('audio', packet) in file order.

        Damaged data ends the iteration and is recorded in `self.error`: a truncated file
        yields what decodes.
        """
        streams = [self.video] + ([self.audio] if self.audio else [])
        index, last_pts = 0, None
        try:
            for packet in self.container.demux(streams):
                if packet.stream is self.audio:
                    if packet.dts is not None:
                        yield "audio", packet
                    continue
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else round(index / self.rate / self.time_base)
                    yield "video", upright(frame.to_ndarray(format="rgb24"), frame.rotation), pts
                    index, last_pts = index + 1, pts
        except (av.FFmpegError, EOFError) as error:
            self.error = error
        if self.error is None:
            self.error = self.missing_frames(index, last_pts)

    def missing_frames(self, decoded, last_pts):
        """Why the file seems cut short, or None: FFmpeg often just stops at the end of the data."""
        if self.frames_expected and decoded < self.frames_expected:
            return f"the file announces {self.frames_expected} frames"
        if self.container.duration and last_pts is not None:
            announced = self.container.duration / av.time_base
            end = float((last_pts - (self.video.start_time or 0)) * self.time_base) + 1 / float(self.rate)
            if end < announced - max(0.5, 2 / float(self.rate)):
                return f"the file announces {announced:.2f} s, its frames stop at {end:.2f} s"
        return None

    def close(self):
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def even_size(width, height):
    """yuv420p stores colour at half resolution: x264 needs even sizes, so odd ones grow by 1."""
    return width + width % 2, height + height % 2


def pad_to_even(array):
    """Repeat the last row/column when a side is odd (see `even_size`)."""
    height, width = array.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return array
    return np.pad(array, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


class VideoWriter:
    """An H.264/MP4 file with the reader's timestamps and audio."""

    def __init__(self, path, reader, width, height):
        self.container = av.open(path, "w", format="mp4", container_options={"movflags": "+faststart"})
        self.video = self.container.add_stream("libx264", rate=reader.rate)
        self.video.width, self.video.height = even_size(width, height)
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(CRF), "preset": PRESET}
        self.video.codec_context.time_base = reader.time_base
        self.video.time_base = reader.time_base
        self.time_base = reader.time_base
        self.audio = None
        self.copy_audio = reader.audio is not None and reader.audio.codec_context.name in AUDIO_COPY_CODECS
        if self.copy_audio:
            self.audio = self.container.add_stream_from_template(reader.audio)
        elif reader.audio is not None:
            # The standard layout for the channel count: a PCM track may carry an unnamed
            # "1 channels" layout, which the AAC encoder refuses.
            channels = reader.audio.codec_context.layout.nb_channels
            self.audio = self.container.add_stream("aac", rate=reader.audio.codec_context.sample_rate,
                                                   layout=av.AudioLayout(f"{channels}c").name)

    def write_frame(self, array, pts):
        frame = av.VideoFrame.from_ndarray(pad_to_even(array), format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        self.container.mux(self.video.encode(frame))

    def write_audio(self, packet):
        if self.copy_audio:
            packet.stream = self.audio
            self.container.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            self.container.mux(self.audio.encode(frame))

    def close(self):
        """Flush the encoders and finish the file."""
        self.container.mux(self.video.encode(None))
        if self.audio is not None and not self.copy_audio:
            self.container.mux(self.audio.encode(None))
        self.container.close()

    def abort(self):
        self.container.close()
