"""Video in and out through PyAV (FFmpeg's libraries, shipped inside the wheel).

Reading: any container and codec FFmpeg decodes, frames turned upright per the stream's
display rotation (and with them the shape of anamorphic pixels), transparent pixels laid over
white as pictures' are, timestamps kept (counted from where the video and its sound start, as
FFmpeg counts them: `VideoReader._start`); damaged packets are skipped, not the end of the
video. Recordings joined end to end (`cat a.ts b.ts`) are read as one video: their timestamps
go on where they would restart, and frames of another size are scaled to the first one's.
Interlaced frames (a camcorder's 1080i, a TV recording, a DV tape) are deinterlaced, one frame
out for one in, as a player deinterlaces them for display: the network would otherwise paint
the combs of the moving edges.
Writing: H.264 in MP4, yuv420p (what browsers play), the input's timestamps (variable frame
rate and 24000/1001 survive), its colour tags and pixel shape (a player shows the output in
the input's colours and shape: BT.709 HD stays BT.709, an untagged video is tagged with the
matrix a player would guess for it, anamorphic stays anamorphic), its file's
and streams' tags, and one audio track (`VideoReader._audio_track`), read separately from the
input file and interleaved by time: copied when MP4 can hold its codec, otherwise re-encoded to
AAC; its damaged packets are skipped too.
"""
import fractions
import os
import re

import av
import numpy as np
from PIL import Image

import transformer
from cli import UserError, existing_folder, regular_file

CRF = 18  # x264 constant quality: visually lossless for most content, ~1-3 Mbit/s at 360p
PRESET = "medium"
AUDIO_COPY_CODECS = {"aac", "mp3", "alac", "ac3", "eac3"}  # what MP4 carries as it is
# The sample rates FFmpeg's AAC encoder takes: sound at another (a 192 kHz recording, 37.8 kHz) is resampled
# to the nearest of them.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
DEFAULT_RATE = fractions.Fraction(25)  # FFmpeg's for what gives no rate: an image sequence, an animated WebP
# The number in the name of an image sequence's pictures, as FFmpeg and OpenCV write it: frames/%05d.png.
NUMBER_FIELD = re.compile(r"%(?:0\d+)?d")
# Tags of the input file that describe its container, not its content: the output's own muxer writes them.
CONTAINER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder"}
# The colour matrices (FFmpeg's numbers) that swscale converts RGB into YUV with: BT.709, FCC, BT.601 (as
# BT470BG and SMPTE170M), SMPTE240M, BT.2020. Others do not describe yuv420p frames: the output's matrix is
# then left untagged.
YUV_MATRICES = {1, 4, 5, 6, 7, 9}
UNTAGGED = 2
BT709, SRGB_TRANSFER = 1, 13  # FFmpeg's numbers for BT.709 (matrix, primaries) and IEC 61966-2-1 (sRGB's curve)
BT601 = 6  # FFmpeg's number for SMPTE 170M: BT.601's matrix, as SD video is tagged
SRGB = (BT709, BT709, SRGB_TRANSFER)  # what pictures are (transformer.load_image makes them sRGB), as YUV
# libvpx's decoders, which read the transparency that a WebM keeps beside its VP8 or VP9 frames (FFmpeg's own drop it).
LIBVPX_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}
# Picture formats (PIL's names) whose several images are the frames of an animation.
ANIMATED_PICTURES = {"GIF", "PNG", "WEBP", "FLI", "AVIF"}
# FFmpeg's bwdif (as good as yadif or better, as fast): a frame for each frame (send_frame), its first field
# kept and the other interpolated from both fields around it; frames not flagged interlaced pass as they are.
DEINTERLACE = "mode=send_frame:parity=auto:deint=interlaced"


def is_image_sequence(path):
    """Whether `path` names numbered pictures (`frames/%05d.png`: one number field in the file name, as FFmpeg
    and OpenCV take image sequences) rather than a file. A file of that name is a file."""
    name = os.path.basename(path)
    return not os.path.exists(path) and len(NUMBER_FIELD.findall(name)) == 1 and name.count("%") == 1


def sequence_files(pattern):
    """The pictures that `pattern` numbers (`is_image_sequence`), in the order of their numbers (frame_10.png
    after frame_9.png; a name the pattern does not write, such as frame_010.png for frame_%d.png, is not one)."""
    folder, name = os.path.split(pattern)
    before, after = NUMBER_FIELD.split(name)
    numbered = re.compile(re.escape(before) + r"(\d+)" + re.escape(after))
    found = []
    for entry in os.listdir(folder or "."):
        match = numbered.fullmatch(entry)
        if match and name % int(match.group(1)) == entry and os.path.isfile(os.path.join(folder, entry)):
            found.append((int(match.group(1)), os.path.join(folder, entry)))
    return [path for _, path in sorted(found)]


def sequence_in(folder):
    """The image sequence that the first numbered file of `folder` starts (frame_0001.png: folder/frame_%04d.png),
    if it numbers two pictures at least; else None. What a user who named the folder probably meant."""
    for name in sorted(os.listdir(folder)):
        stem, extension = os.path.splitext(name)
        digits = list(re.finditer(r"\d+", stem))
        if not digits or "%" in name:
            continue
        number = digits[-1]
        field = f"%0{len(number.group())}d" if len(number.group()) > 1 else "%d"
        pattern = os.path.join(folder, stem[:number.start()] + field + stem[number.end():] + extension)
        return pattern if len(sequence_files(pattern)) > 1 else None
    return None


def existing_input(path, flag):
    """`path` if it is a file that can be read, or an image sequence with a picture at least; else a UserError,
    which for a folder of numbered pictures names the sequence they make."""
    sequence = sequence_in(path) if os.path.isdir(path) else None
    if sequence:
        raise UserError(f"{flag} {path}: a folder; its pictures as a video: {flag} {sequence}")
    if not is_image_sequence(path):
        return regular_file(path, flag)
    existing_folder(os.path.dirname(path) or ".", f"{flag} {path}")
    if not sequence_files(path):
        raise UserError(f"{flag} {path}: no picture in {os.path.dirname(path) or '.'} is numbered by this pattern")
    return path


def media_name(path, qualified=False):
    """A name for what `path` holds, for the names of outputs: a file's stem, an image sequence's folder name
    (frames/%05d.png: frames). `qualified`, to tell apart two of the same name: the file's name with its
    extension (clip_mp4), the sequence's folder with the one above it (clean_alley_1)."""
    if is_image_sequence(path):
        folders = os.path.abspath(os.path.dirname(path)).split(os.sep)
        return "_".join(folders[-2:]) if qualified else folders[-1]
    name = os.path.basename(path)
    return name.replace(".", "_") if qualified else os.path.splitext(name)[0]


def probe(path):
    """'image' or 'video' by the file's content (never its name), or None for neither.

    An image sequence (`is_image_sequence`) is a video when it numbers a picture at least.

    A picture is an image, whatever its size (the pixel limit is checked when it is loaded), unless it is
    animated (`ANIMATED_PICTURES`): the further images of a phone's JPEG (an HDR gain map, a depth map, in
    MPO's format), of a multi-page TIFF or of a layered PSD are not frames. An animated GIF or WebP and
    anything FFmpeg finds a video stream in is a video.
    """
    if is_image_sequence(path):
        return "video" if sequence_files(path) else None
    picture, frames = transformer.picture_format(path)
    if frames == 1 or (frames > 1 and picture not in ANIMATED_PICTURES):
        return "image"
    if picture == "WEBP":
        return "video"  # animated; FFmpeg does not decode it (`open_video`)
    try:
        with open_input(path) as container:
            return "video" if video_streams(container) else None
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None


def open_input(path):
    """The file at `path` opened by FFmpeg. A tag in another encoding than UTF-8 (an old AVI's Latin-1 title)
    has its undecodable bytes replaced, rather than making PyAV refuse the whole file."""
    return av.open(path, metadata_errors="replace")


def demux(container, *streams):
    """`container.demux(*streams)`. Streams that begin later in a file than its start announced (MPEG-TS recordings
    with other stream numbers joined end to end) are left out, as FFmpeg leaves them out; once PyAV (18.1) has given
    every packet of the announced ones, it may fail reading past its list of streams (IndexError): the end."""
    try:
        yield from container.demux(*streams)
    except IndexError:
        return


def open_video(path, sequence_rate=DEFAULT_RATE):
    """A reader of the video at `path`, to `close`: FFmpeg's (`VideoReader`), or PIL's for an animated WebP,
    which FFmpeg (8.1) does not decode (`AnimatedWebP`), and for an image sequence at `sequence_rate` frames/s
    (`ImageSequence`); these two check each picture against `transformer.DECODE_MAX_PIXELS` before they decode."""
    if is_image_sequence(path):
        return ImageSequence(path, sequence_rate)
    return AnimatedWebP(path) if transformer.picture_format(path)[0] == "WEBP" else VideoReader(path)


def video_streams(container):
    """A file's video streams, less attached pictures: the cover art of a song or an album, which FFmpeg
    lists as a one-frame video stream."""
    return [stream for stream in container.streams.video
            if not stream.disposition & av.stream.Disposition.attached_pic]


def rgb_source_colour(primaries=UNTAGGED, transfer=UNTAGGED):
    """The colour tags of frames that come as RGB (a GIF, PNG in MOV, QuickTime Animation): no YUV matrix to keep,
    so the output gets BT.709's, tagged, with the source's primaries and transfer, else sRGB's. Untagged, a
    player guesses BT.709 at HD sizes and BT.601 below, and the writer would convert with BT.601: at HD sizes
    saturated colours would be shown up to 42 grey levels off."""
    return BT709, BT709 if primaries == UNTAGGED else primaries, SRGB_TRANSFER if transfer == UNTAGGED else transfer


def players_matrix(width, height):
    """The YUV matrix that players show an untagged video with (mpv's rule): BT.709 for HD sizes, else BT.601."""
    return BT709 if width >= 1280 or height > 576 else BT601


def is_rgb_format(pix_fmt):
    """Whether frames in FFmpeg's pixel format `pix_fmt` (None: not known) are RGB or palette colours."""
    return pix_fmt is not None and (av.VideoFormat(pix_fmt).is_rgb or av.VideoFormat(pix_fmt).has_palette)


def rgb_array(frame, width, height):
    """A decoded frame as an HWC uint8 RGB array of width × height. A video with transparency (ProRes 4444, PNG or
    QuickTime Animation in MOV, a GIF) has its transparent pixels laid over white, as pictures have
    (`transformer.to_rgb`): dropping alpha would show whatever colour sits under them."""
    if not any(component.is_alpha for component in frame.format.components):
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    rgba = Image.fromarray(frame.to_ndarray(format="rgba", width=width, height=height))
    return np.asarray(transformer.to_rgb(rgba))


def upright(array, rotation):
    """Undo a display rotation (degrees counter-clockwise, as FFmpeg's display matrix gives)."""
    return np.ascontiguousarray(np.rot90(array, k=(rotation // 90) % 4)) if rotation % 360 else array


def upright_aspect(aspect, rotation):
    """The width / height of pixels `aspect` as stored once turned by `rotation` (None for square)."""
    if not aspect or aspect == 1:
        return None
    return aspect if rotation % 180 == 0 else 1 / aspect


class Timeline:
    """A stream's timestamps made to increase: where they go back or repeat (a recording joined to the
    end of another restarts at its own zero), that one and all after it move on to one `step` after the
    last, as FFmpeg moves timestamps across such a discontinuity."""

    def __init__(self):
        self.offset, self.last, self.restarts = 0, None, 0

    def place(self, timestamp, step):
        timestamp += self.offset
        if self.last is not None and timestamp <= self.last:
            self.offset += self.last + step - timestamp
            timestamp, self.restarts = self.last + step, self.restarts + 1
        self.last = timestamp
        return timestamp


class VideoReader:
    """The upright RGB frames of a file's first video stream (`video_streams`), with their timestamps."""

    def __init__(self, path):
        self.path = path
        self.container = open_input(path)
        self.video = video_streams(self.container)[0]
        self.video.thread_type = "AUTO"
        self.audio_index = self._audio_track()
        self.rate = self.video.average_rate or self.video.guessed_rate or DEFAULT_RATE
        self.time_base = self.video.time_base or 1 / self.rate
        self.start = self._start()
        # The colour matrix, primaries and transfer the stream is tagged with (FFmpeg's numbers, or UNTAGGED):
        # swscale turns its YUV into RGB with that matrix, and the writer must turn RGB back with the same.
        # An RGB stream has none (`rgb_source_colour`). An untagged YUV stream (what FFmpeg writes unless told)
        # is read with the matrix a player shows it with, which the output is then tagged with: shown alike at
        # any size, where --content_size crosses the bounds of the player's guess.
        context = self.video.codec_context  # None where no codec reads the stream (a damaged header)
        self.colour = (context.colorspace, context.color_primaries, context.color_trc) if context else (UNTAGGED,) * 3
        if context is not None and is_rgb_format(context.pix_fmt):
            self.colour = rgb_source_colour(context.color_primaries, context.color_trc)
        elif context is not None and self.colour[0] == UNTAGGED:
            self.colour = (players_matrix(context.width, context.height),) + self.colour[1:]
        # What decodes the stream's packets: the stream, or for a WebM with transparency ("alpha_mode" 1: a
        # sticker, an overlay) libvpx's decoder.
        self.decoder = self.video
        if context is not None and context.name in LIBVPX_DECODERS and self.video.metadata.get("alpha_mode") == "1":
            self.decoder = av.CodecContext.create(LIBVPX_DECODERS[context.name], "r")
        self.frames_expected = self.video.frames  # 0 when the container does not say
        self.metadata = dict(self.container.metadata)  # the file's tags: title, creation time, place, …
        self.damaged_packets = 0
        # Frames decoded but not shown: an MP4 cut without re-encoding starts at the keyframe before the cut,
        # and its edit list hides the frames before it; the demuxer marks their packets "discard".
        self.hidden_frames = 0
        self.other_data_end = 0.0  # seconds: where the packets of the file's other streams end
        self.rescaled = 0  # frames of another size than the first, scaled to it
        self.deinterlaced = 0  # frames flagged interlaced, deinterlaced (`Deinterlacer`)
        self.pixel_aspect = None  # width / height of an upright frame's pixels, from the first frame on (None: 1)
        self.timeline = Timeline()
        self.read_error = None
        self.problem = None  # why the file seems damaged, once `frames` has run to its end

    def _audio_track(self):
        """The index of the audio track to keep, or None: the first one flagged default (a film's main language,
        not its commentary), else the first, among those FFmpeg can read. A damaged header can leave a track
        without a codec, or without the sample rate or channel count that an MP4 needs to hold it."""
        readable = [stream for stream in self.container.streams.audio
                    if stream.codec_context is not None and stream.codec_context.sample_rate > 0
                    and stream.codec_context.layout.nb_channels > 0]
        flagged = [stream for stream in readable if stream.disposition & av.stream.Disposition.default]
        return next((stream.index for stream in flagged + readable), None)

    def _start(self):
        """Where the video and its sound start, in seconds: a recording cut from a broadcast or a camera's
        MPEG-TS starts where its clock stood, perhaps hours in. Frames and sound are timed from there, as
        FFmpeg times them, so that the output starts at 0. (A start below 0, an MP4's audio priming, stays.)"""
        streams = [self.video] + ([self.container.streams[self.audio_index]] if self.audio_index is not None else [])
        starts = [stream.start_time * stream.time_base for stream in streams if stream.start_time is not None]
        return max(0, min(starts, default=0))

    def frames(self):
        """Yield (HWC uint8 array, pts) for every frame that decodes, in display order, with increasing
        timestamps (`Timeline`) and all of the first frame's size: where the size changes (recordings
        joined end to end), the other frames are scaled to it, as FFmpeg does."""
        decoded, last_pts, size = 0, None, None
        step = max(1, round(1 / (self.rate * self.time_base)))  # one frame, in the stream's time base
        start = round(self.start / self.time_base)
        for frame in self._progressive(self._decoded_frames()):
            if size is None:
                size = (frame.width, frame.height)
                self.pixel_aspect = upright_aspect(self.video.sample_aspect_ratio, frame.rotation)
            self.rescaled += (frame.width, frame.height) != size
            pts = frame.pts - start if frame.pts is not None else round(decoded / self.rate / self.time_base)
            pts = self.timeline.place(pts, step)
            if frame.colorspace == UNTAGGED:  # the matrix swscale reads it with (an RGB frame has none to apply)
                frame.colorspace = self.colour[0]
            yield upright(rgb_array(frame, *size), frame.rotation), pts
            decoded, last_pts = decoded + 1, pts
        self.problem = self._problem(decoded, last_pts)

    def _decoded_frames(self):
        """Skip packets that do not decode; after a container error, flush what the decoder still holds. The
        other streams' packets are only timed (`other_data_end`)."""
        try:
            for packet in demux(self.container):
                if packet.stream.index != self.video.index:
                    self._time_other_packet(packet)
                    continue
                self.hidden_frames += packet.is_discard
                try:
                    frames = self.decoder.decode(packet)
                except av.FFmpegError:
                    self.damaged_packets += 1
                    continue
                yield from frames
            return
        except (av.FFmpegError, EOFError) as error:
            self.read_error = error
        try:
            frames = self.decoder.decode(None)
        except (av.FFmpegError, EOFError):
            return
        yield from frames

    def count_frames(self):
        """How many frames `frames` gives, counted by decoding them without turning them into arrays: a packet
        count would include damaged packets, frames hidden by an edit list and the two fields of an interlaced
        frame coded apart. Reads the file to its end: a reader that counts does not read frames."""
        return sum(1 for _ in self._decoded_frames())  # deinterlacing gives a frame for a frame

    def _progressive(self, frames):
        """The frames, those flagged interlaced deinterlaced (`Deinterlacer`). From the first such frame on,
        every frame goes through the filter, which passes the others as they are, so that the order is kept.
        Where the size or pixel format changes (recordings joined end to end), a new filter starts."""
        deinterlacer = None
        for frame in frames:
            if deinterlacer is not None and not deinterlacer.takes(frame):
                yield from deinterlacer.flush()
                deinterlacer = None
            if deinterlacer is None and frame.interlaced_frame:
                try:
                    deinterlacer = Deinterlacer(frame, self.time_base)
                except av.FFmpegError:  # a frame too small for the filter (a few pixels): kept as it is
                    pass
            self.deinterlaced += frame.interlaced_frame and deinterlacer is not None
            yield from deinterlacer.push(frame) if deinterlacer is not None else [frame]
        if deinterlacer is not None:
            yield from deinterlacer.flush()

    def _time_other_packet(self, packet):
        """Note where a packet of another stream ends, in seconds from the start (`_problem`)."""
        if packet.pts is not None:
            end = (packet.pts + (packet.duration or 0)) * packet.time_base - self.start
            self.other_data_end = max(self.other_data_end, float(end))

    def _problem(self, decoded, last_pts):
        """Why the file seems damaged, or None: FFmpeg often just stops at the end of the data."""
        problems = []
        if self.read_error is not None:
            problems.append(f"reading stopped early: {self.read_error}")
        if self.damaged_packets:
            problems.append(f"{self.damaged_packets} damaged packet(s) skipped")
        if self.container.streams.audio and self.audio_index is None:
            problems.append("its sound is left out: its audio track cannot be read (no codec, or a damaged header)")
        short = self._short_of_time(last_pts)
        if self.frames_expected and decoded < self.frames_expected - self.hidden_frames and short is not False:
            problems.append(f"the file announces {self.frames_expected - self.hidden_frames} frames")
        elif short:
            problems.append(short)
        return "; ".join(problems) or None

    def _short_of_time(self, last_pts):
        """Whether the file's data stops before the time it announces: why, False, or None when it announces
        none. A file cut short stops in every stream; sound may go on after the last frame of a whole one.
        (The frames a file announces are no proof alone: an AVI counts a slot without a frame among them.)"""
        if not self.container.duration or last_pts is None:
            return None
        announced = self.container.duration / av.time_base
        end = max(float(last_pts * self.time_base) + 1 / float(self.rate), self.other_data_end)
        if end < announced - max(0.5, 2 / float(self.rate)):
            return f"the file announces {announced:.2f} s, its data stops at {end:.2f} s"
        return False

    def notes(self):
        """What reading took besides decoding, in words, or None: joining recordings (restarts of the timestamps,
        frames of another size) and deinterlacing."""
        joined = [f"{self.timeline.restarts} restart(s) of its timestamps continued"] if self.timeline.restarts else []
        if self.rescaled:
            joined.append(f"{self.rescaled} frame(s) of another size scaled to the first's")
        notes = [f"joined recordings: {', '.join(joined)}"] if joined else []
        if self.deinterlaced:
            notes.append(f"{self.deinterlaced} interlaced frame(s) deinterlaced")
        return "; ".join(notes) or None

    def close(self):
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AnimatedWebP:
    """The frames of an animated WebP, read by PIL, as `VideoReader` gives a video's: RGB (transparency over
    white) timed in milliseconds, as the file times them; sRGB, no sound, square pixels."""
    time_base, start, audio_index, colour, pixel_aspect = fractions.Fraction(1, 1000), 0, None, SRGB, None
    video, metadata = None, {}

    def __init__(self, path):
        self.path = path
        self.image = transformer.open_picture(path)
        self.frames_expected = self.image.n_frames
        self.rate = DEFAULT_RATE  # the encoder's nominal rate; the frames keep their own times
        self.problem = None

    def count_frames(self):
        return self.frames_expected

    def frames(self):
        index = 0
        try:
            transformer.check_pixels(*self.image.size, transformer.DECODE_MAX_PIXELS, "its canvas")
            for index in range(self.frames_expected):
                self.image.seek(index)
                self.image.load()
                yield np.asarray(transformer.to_rgb(self.image)), self.image.info["timestamp"]
        except transformer.DAMAGED_PICTURE_ERRORS as error:  # TooLarge among them
            self.problem = f"frame {index} cannot be read: {error}"

    def notes(self):
        return None

    def close(self):
        self.image.close()


class ImageSequence:
    """Numbered pictures (`is_image_sequence`) read as a video's frames, one every 1/rate s in the order of their
    numbers (a gap in the numbering, as in a sequence of every other frame, is none in time). Each is read as an
    image input is (`transformer.load_image`: upright, in sRGB); one of another size than the first is scaled to
    it, as `VideoReader` scales joined recordings. A picture that cannot be read costs its own frame, as a
    damaged packet does; its time stays empty. sRGB, no sound, no tags, square pixels."""
    start, audio_index, colour, pixel_aspect, video, metadata = 0, None, SRGB, None, None, {}

    def __init__(self, pattern, rate=DEFAULT_RATE):
        self.path = pattern
        self.files = sequence_files(pattern)
        self.frames_expected = len(self.files)
        self.rate = fractions.Fraction(rate)
        self.time_base = 1 / self.rate
        self.rescaled = 0
        self.problem = None

    def count_frames(self):
        """How many pictures can be read (each is decoded to know)."""
        return sum(1 for _ in self.frames())

    def frames(self):
        size, unreadable = None, []
        for index, path in enumerate(self.files):
            try:
                image = transformer.load_image(path)
            except transformer.DAMAGED_PICTURE_ERRORS as error:  # TooLarge among them
                unreadable.append(f"{path}: {error}")
                continue
            if size is None:
                size = image.size
            elif image.size != size:
                image, self.rescaled = image.resize(size, Image.BILINEAR), self.rescaled + 1
            yield np.asarray(image), index
        if unreadable:
            self.problem = f"{len(unreadable)} of {len(self.files)} picture(s) cannot be read; {unreadable[0]}"

    def picture_name(self, pts):
        """The name, less its extension, of the picture shown at `pts` (frame_0001 of frame_0001.png): a
        dataset's flows and masks go by those names (Sintel's frame_0001.flo)."""
        return os.path.splitext(os.path.basename(self.files[pts]))[0]

    def notes(self):
        return f"{self.rescaled} picture(s) of another size scaled to the first's" if self.rescaled else None

    def close(self):
        pass


class Deinterlacer:
    """FFmpeg's bwdif filter (`DEINTERLACE`) over frames of one size and pixel format: `push` a frame, get
    the frames ready (the filter gives each frame once it has the next), `flush` at the end for the rest.
    Timestamps stay in `time_base`, the stream's."""

    def __init__(self, frame, time_base):
        self.shape, self.time_base = (frame.width, frame.height, frame.format.name), time_base
        self.graph = av.filter.Graph()
        self.graph.link_nodes(
            self.graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=time_base),
            self.graph.add("bwdif", DEINTERLACE), self.graph.add("buffersink")).configure()

    def takes(self, frame):
        return (frame.width, frame.height, frame.format.name) == self.shape

    def push(self, frame):
        self.graph.vpush(frame)
        return self._ready()

    def flush(self):
        self.graph.vpush(None)
        return self._ready()

    def _ready(self):
        frames = []
        while True:
            try:
                frame = self.graph.vpull()
            except (BlockingIOError, EOFError):
                return frames
            if frame.pts is not None:  # the filter counts in half the stream's time base, for fields
                frame.pts = round(frame.pts * frame.time_base / self.time_base)
            frame.time_base = self.time_base
            frames.append(frame)


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
    """An H.264/MP4 file (into an open binary file) with the reader's timestamps, colour tags, pixel shape
    (known once the reader has read its first frame), its file's audio and its file's and streams' tags (title,
    creation time, place, language: what FFmpeg copies by default; a phone's gallery sorts videos by their
    creation time)."""

    def __init__(self, file, reader, width, height):
        self.file = _OutputFile(file)
        self.container = av.open(self.file, "w", format="mp4", container_options={"movflags": "+faststart"})
        self.video = self.container.add_stream("libx264", rate=reader.rate)
        self.video.width, self.video.height = even_size(width, height)
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(CRF), "preset": PRESET}
        self.video.codec_context.time_base = reader.time_base
        self.video.time_base = self.time_base = reader.time_base
        matrix, primaries, transfer = reader.colour
        self.matrix = matrix if matrix in YUV_MATRICES else UNTAGGED
        context = self.video.codec_context
        context.colorspace, context.color_primaries, context.color_trc = self.matrix, primaries, transfer
        if reader.pixel_aspect:
            context.sample_aspect_ratio = reader.pixel_aspect
        self.container.metadata.update({key: value for key, value in reader.metadata.items()
                                        if key not in CONTAINER_TAGS})
        if reader.video is not None:
            self.video.metadata.update(reader.video.metadata)
        self.audio = None if reader.audio_index is None else \
            _AudioTrack(reader.path, reader.audio_index, self.container, reader.start)

    def write_frame(self, array, pts):
        if self.audio:
            self.audio.copy_until(float(pts * self.time_base))
        frame = av.VideoFrame.from_ndarray(pad_to_even(array), format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        frame.colorspace = self.matrix  # the matrix the encoder's swscale turns it into YUV with
        self.container.mux(self.video.encode(frame))

    def close(self):
        """Flush the encoder, add the rest of the audio, finish the file."""
        self.container.mux(self.video.encode(None))
        if self.audio:
            self.audio.finish()
        self.container.close()

    def audio_problem(self):
        """Why the input's sound seems damaged, or None."""
        damaged = self.audio.damaged_packets if self.audio else 0
        return f"{damaged} damaged audio packet(s) skipped" if damaged else None

    def abort(self):
        """Close after a failure: what closing still writes (the MP4's index) is dropped, and so is the
        error closing reports when a write failed before (FFmpeg keeps it and gives it again): the
        failure being handled is the one to tell."""
        self.file.failed = True
        if self.audio:
            self.audio.source.close()
        try:
            self.container.close()
        except av.FFmpegError:
            pass


class _OutputFile:
    """The file PyAV writes through, until a write fails (a full disk) or the writer aborts; then
    writes and seeks are dropped, so that closing the broken container writes nothing more.
    (`+faststart` moves the index to the front once the file is complete: FFmpeg reads the
    file back, through `read` and by reopening `name`.)"""

    def __init__(self, file):
        self.file, self.failed = file, False
        self.name = file.name

    def write(self, data):
        if self.failed:
            return len(data)
        try:
            return self.file.write(data)
        except OSError:
            self.failed = True
            raise

    def seek(self, offset, whence=0):
        return 0 if self.failed else self.file.seek(offset, whence)

    def tell(self):
        return self.file.tell()

    def read(self, size=-1):
        return b"" if self.failed else self.file.read(size)


class _AudioTrack:
    """Audio track `index` of a file, demuxed on its own and muxed into `output` in step with the video, timed
    from `start` seconds (`VideoReader.start`)."""

    def __init__(self, path, index, output, start):
        self.source = open_input(path)
        self.input = self.source.streams[index]
        self.output, self.start = output, start
        self.copy = self.input.codec_context.name in AUDIO_COPY_CODECS
        if self.copy:
            self.stream = output.add_stream_from_template(self.input)
        else:
            # The standard layout for the channel count: a PCM track may carry an unnamed
            # "1 channels" layout, which the AAC encoder refuses.
            # The encoder resamples what it is given to its stream's rate.
            channels, rate = self.input.codec_context.layout.nb_channels, self.input.codec_context.sample_rate
            self.stream = output.add_stream("aac", rate=min(AAC_RATES, key=lambda aac_rate: abs(aac_rate - rate)),
                                            layout=av.AudioLayout(f"{channels}c").name)
        self.stream.metadata.update(self.input.metadata)
        self.timeline = Timeline()
        self.damaged_packets = 0
        self.packets = self._packets()
        self.next = next(self.packets, None)
        # Re-encoded sound is timed by counting its samples, from where the input's sound starts: the
        # encoder's frames are of another size, and a damaged input's timestamps may jump.
        lead = max(0, self.next.dts * self.next.time_base) if self.next is not None else 0
        self.samples = round(lead * self.input.codec_context.sample_rate)

    def _packets(self):
        """The track's packets, with increasing timestamps (`Timeline`); a damaged file's audio ends where its
        data does."""
        try:
            for packet in demux(self.source, self.input):
                if packet.dts is None:
                    continue
                start = round(self.start / packet.time_base)
                shift = self.timeline.place(packet.dts - start, max(1, packet.duration or 0)) - packet.dts
                packet.dts += shift
                if packet.pts is not None:
                    packet.pts += shift
                yield packet
        except (av.FFmpegError, EOFError):
            return

    def copy_until(self, seconds):
        """Mux the packets that start before `seconds` (all that remain when None)."""
        while self.next is not None and (seconds is None or float(self.next.dts * self.next.time_base) < seconds):
            self._mux(self.next)
            self.next = next(self.packets, None)

    def finish(self):
        self.copy_until(None)
        if not self.copy:
            self.output.mux(self.stream.encode(None))
        self.source.close()

    def _mux(self, packet):
        """Mux one packet, copied or re-encoded. A damaged one is skipped and counted, as the video's are:
        refused by the decoder, by the encoder (a frame whose sample format, layout or rate changed), or for a
        copy by the muxer (AAC from MPEG-TS goes through a filter that reads its header). A failed write
        (PyAVCallbackError, or an OSError) is not damage: it ends the video."""
        try:
            if self.copy:
                packet.stream = self.stream
                self.output.mux(packet)
                return
            for frame in packet.decode():
                frame.pts, frame.time_base = self.samples, fractions.Fraction(1, frame.sample_rate)
                self.samples += frame.samples
                self.output.mux(self.stream.encode(frame))
        except (av.FFmpegError, ValueError) as error:
            if isinstance(error, (av.error.PyAVCallbackError, OSError)):
                raise
            self.damaged_packets += 1
