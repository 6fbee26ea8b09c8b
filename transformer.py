"""Image and frame transforms, with torchvision's semantics, in PIL and NumPy.

Jittor's own `jittor.transform` is not torchvision: its `Resize(int)` makes a square image
and its `CenterCrop` floors where torchvision rounds. The original MCCNet relies on
torchvision, so the rules are written out here. Arrays are float32 CHW in [0, 1], the
layout the networks take (as torchvision's `ToTensor` gives).
"""
import io

import numpy as np
import pillow_heif.HeifImagePlugin  # noqa: F401 -- importing it lets PIL open HEIF (HEIC), phones' photos
from PIL import Image, ImageCms, ImageOps

TRAIN_CROP = 256
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# The default --max_pixels: the largest image or frame we stylize, once sized by --content_size or
# --style_size. Each 64-channel feature map of a 4096 × 4096 image takes 4.3 GB, and a few are alive at once.
MAX_PIXELS = 4096 * 4096
# The largest picture we decode, whatever it is then resized to: Pillow's own limit against decompression
# bombs (twice its MAX_IMAGE_PIXELS), which the original meets too. A phone's 48- or 50-megapixel photo is
# well below it (about 150 MB decoded), and so are the large scans among WikiArt's paintings.
DECODE_MAX_PIXELS = 2 * 89_478_485


# What PIL and its format plugins raise on a damaged file, or one of another kind (pillow-heif raises
# EOFError where a HEIF's data ends too soon).
DAMAGED_PICTURE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


class TooLarge(ValueError):
    """An image, or an image after resizing, above the pixel limit."""


# ---------------------------------------------------------------- images ↔ arrays

def open_picture(path):
    """Image.open with Pillow's decompression-bomb check off: the size is checked against the
    same limit (DECODE_MAX_PIXELS) before anything is decoded, and a picture too large for
    Pillow must still be recognised as a picture, not handed to FFmpeg."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def picture_format(path):
    """(PIL's name for the format, number of frames) of a picture, (None, 0) when it is not one PIL reads;
    decodes nothing. (PIL counts a PSD's layers: a flattened one has none, and is one picture.)"""
    try:
        with open_picture(path) as image:
            return image.format, max(1, getattr(image, "n_frames", 1))
    except DAMAGED_PICTURE_ERRORS:
        return None, 0


def check_pixels(width, height, max_pixels, what="the image"):
    if width * height > max_pixels:
        raise TooLarge(f"{what} is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}")


def load_image(path, as_shown=True):
    """An RGB PIL image from any file PIL reads, as a viewer shows it: turned upright per its EXIF
    orientation, its colours in sRGB per its ICC profile (`in_srgb`).

    Its size is checked against DECODE_MAX_PIXELS before it is decoded (TooLarge); a damaged
    file raises one of DAMAGED_PICTURE_ERRORS. Training reads its images as the original does,
    without EXIF rotation or profile (`as_shown=False`).
    """
    with open_picture(path) as image:
        check_pixels(*image.size, DECODE_MAX_PIXELS, "the picture")
        return in_srgb(ImageOps.exif_transpose(image)) if as_shown else to_rgb(image)


def in_srgb(image):
    """RGB in sRGB, the colours the network was trained on and that an untagged output is shown in: a
    picture's ICC profile (a phone's Display P3, a scan's Adobe RGB or CMYK) converts it; without one, or
    with one that does not parse or fit the picture's mode, the picture is taken as sRGB already."""
    rgb = to_rgb(image)
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        space = profile.profile.xcolor_space.strip()
    except (KeyError, TypeError, ValueError, OSError, ImageCms.PyCMSError):  # none, or a damaged one
        return rgb
    if space == "RGB":
        source = rgb
    elif (space, image.mode) in (("CMYK", "CMYK"), ("GRAY", "L")):
        source = image  # a CMYK or grey profile describes the picture's own channels
    else:
        return rgb
    try:
        return ImageCms.profileToProfile(source, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ValueError, ImageCms.PyCMSError):
        return rgb


def to_rgb(image):
    """RGB for every PIL mode a user's picture can have.

    Transparent pixels are laid over white (dropping alpha, as `convert('RGB')` does, shows
    whatever colour happens to sit under them, often black). 16-bit greyscale is scaled
    down; `convert('RGB')` would clip it to white. Floating-point greyscale (a TIFF of mode F)
    runs from black at 0 to white at 1, as viewers show it; `convert('RGB')` would truncate it
    to 0 or 1 of 255: black.
    """
    if image.mode in SIXTEEN_BIT_MODES + ("F",):
        grey = np.asarray(image, dtype=np.float64)
        white = 1.0 if image.mode == "F" else 65535.0 if grey.max() > 255 else 255.0
        grey = np.clip(np.nan_to_num(grey / white * 255.0 + 0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def images_to_array(images):
    """HWC uint8 images (PIL or arrays) of one size → an NCHW float32 batch in [0, 1], as torchvision's
    ToTensor on each.

    Each image is converted straight into its place in the batch, then the batch divided in place: half
    the time of stacking separately converted images, which copies every frame twice more.
    """
    arrays = [np.asarray(image, dtype=np.uint8) for image in images]
    batch = np.empty((len(arrays), 3) + arrays[0].shape[:2], np.float32)
    for slot, array in zip(batch, arrays):
        slot[...] = array.transpose(2, 0, 1)
    batch /= np.float32(255.0)
    return batch


def image_to_array(image):
    """HWC uint8 image (PIL or array) → CHW float32 in [0, 1], as torchvision's ToTensor."""
    return images_to_array([image])[0]


def array_to_image(array):
    """CHW float (any range) → HWC uint8, rounding as torchvision's save_image: x·255 + 0.5, clamped.

    The result is C-contiguous, channel by channel: PyAV copies such a frame at once and a
    transposed view value by value, many times slower (docs/history.md), and `np.ascontiguousarray`
    of that view would cost another copy.
    """
    scaled = np.asarray(array, dtype=np.float32) * np.float32(255.0)
    scaled += np.float32(0.5)
    planes = np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    image = np.empty(planes.shape[1:] + planes.shape[:1], np.uint8)
    for channel, plane in enumerate(planes):
        image[..., channel] = plane
    return image


def image_bytes(array, extension):
    """An HWC uint8 array encoded as a `.png` or `.jpg` (quality 95) file's bytes."""
    buffer = io.BytesIO()
    if extension == ".png":
        Image.fromarray(array).save(buffer, "PNG")
    else:
        Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


# ---------------------------------------------------------------- geometry, torchvision rules

def shorter_side_size(width, height, size):
    """torchvision Resize(int): the shorter side becomes `size`, the longer keeps the aspect (truncated)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_shorter_side(image, size, max_pixels=MAX_PIXELS):
    """Resize so that the shorter side is `size` (0 keeps the image), refusing a result above `max_pixels`."""
    new_size = shorter_side_size(*image.size, size) if size else image.size
    check_pixels(*new_size, max_pixels, f"the image resized to a shorter side of {size}" if size else "the image")
    return image.resize(new_size, Image.BILINEAR) if size else image


def style_side(content_height, style_size=None):
    """The style image's shorter side, by the original's rule: --style_size when given, else the content's height."""
    return content_height if style_size is None else style_size


def center_crop(image, size):
    """torchvision CenterCrop(size): a size × size square, offsets rounded (not floored)."""
    width, height = image.size
    if width < size or height < size:
        raise ValueError(f"cannot crop {size}x{size} from a {width}x{height} image")
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


# ---------------------------------------------------------------- the original's pipelines

def train_transform(image, rng, crop=TRAIN_CROP):
    """Training: resize to 2·crop square (aspect not kept), random crop × crop, to array.

    The original's sizes are 512 and 256. Only the cropped part is resized (Pillow's `box`): Pillow places each
    output pixel's filter by its position in the whole image, so these are the pixels of the whole image resized
    and then cropped, for a quarter of the work (a 1600×1200 JPEG: 8.2 ms of resizing against 2.0 ms, its
    decoding 7.6 ms). On GPUs the data workers' CPU time is what a training step may wait for.
    """
    side = 2 * crop
    # torchvision's RandomCrop draws the top offset, then the left one, each in 0..side − crop.
    top, left = int(rng.integers(0, side - crop + 1)), int(rng.integers(0, side - crop + 1))
    scale_x, scale_y = image.width / side, image.height / side
    box = (left * scale_x, top * scale_y, (left + crop) * scale_x, (top + crop) * scale_y)
    return image_to_array(image.resize((crop, crop), Image.BILINEAR, box=box))


def sized_image(image, size=0, crop=False, max_pixels=MAX_PIXELS):
    """Inference's sizes: shorter side to `size` (0 keeps it), optional centre crop to a square of that side."""
    image = resize_shorter_side(image, size, max_pixels)
    return center_crop(image, size or min(image.size)) if crop else image


def test_transform(image, size=0, crop=False, max_pixels=MAX_PIXELS):
    """Inference: an image sized by `sized_image`, to array."""
    return image_to_array(sized_image(image, size, crop, max_pixels))


# ---------------------------------------------------------------- colour preservation

class ColourStatistics:
    """The RGB mean and covariance of all the pixels of a content's pictures (HWC uint8): a picture's, or those of
    every frame of a video, gathered one frame at a time.

    The sums of 8-bit values and of their products are integers: summed exactly (in float64 within a frame, where
    they stay below 2^53 up to 2^37 pixels; as Python integers across frames), they do not depend on the frames'
    order or number, and a constant channel (a black frame's) has a variance of exactly 0.
    """

    def __init__(self):
        self.sums = np.zeros((4, 4), dtype=object)  # Σ p pᵀ over the pixels p = (R, G, B, 1)

    def add(self, picture):
        pixels = np.empty((4, picture.shape[0] * picture.shape[1]))
        pixels[:3] = picture.reshape(-1, 3).T
        pixels[3] = 1
        self.sums += (pixels @ pixels.T).astype(np.int64).astype(object)
        return self

    @property
    def count(self):
        return int(self.sums[3, 3])

    def mean(self):
        """Per channel, in [0, 1]."""
        return (self.sums[:3, 3].astype(np.float64) / (255 * self.count))[:, None]

    def scatter(self):
        """Σ (x − mean)(x − mean)ᵀ over the pixels, in [0, 1] units, from the exact N Σ x xᵀ − Σ x Σ xᵀ."""
        exact = self.count * self.sums[:3, :3] - np.outer(self.sums[:3, 3], self.sums[:3, 3])
        return exact.astype(np.float64) / (self.count * 255 ** 2)

    def std(self):
        """Per channel, with N − 1 as torch.std."""
        return np.sqrt(np.diag(self.scatter()) / (self.count - 1))[:, None]

    def regularised_correlation(self):
        """`_regularised_correlation` of the standardised pixels (a constant channel's are 0)."""
        std = _nonzero(self.std())
        return (self.scatter() / (std @ std.T) + np.eye(3)) / (self.count - 1)


def _nonzero(std):
    """Standard deviations to divide by: a constant channel's (0) by 1, as its centred values are all 0."""
    return np.where(std > 0, std, 1.0)


def _regularised_correlation(standardised):
    """(Σ x xᵀ + I) / (N − 1) of standardised pixels: their correlation plus a small ridge."""
    return (standardised @ standardised.T + np.eye(3)) / (standardised.shape[1] - 1)


def _matrix_sqrt(matrix):
    u, s, vt = np.linalg.svd(matrix)
    return u @ np.diag(np.sqrt(s)) @ vt


def coral(source, target):
    """CORAL: `source` (CHW) recoloured with the RGB mean and covariance of `target`, the ColourStatistics of the
    content (a picture, or every frame of a video).

    The original's formula (pytorch-AdaIN's function.coral): per-channel standardisation,
    whitening by the matrix square root of (Σ x xᵀ + I) of the source, colouring by that of
    the target. The original uses those sums as they are, so when the two images have
    different pixel counts (a style image is rarely the frame's size) the result's
    covariance is off by N_target / N_source. Dividing each by its N − 1 gives the same
    numbers when the counts are equal and the content's covariance when they are not.
    A constant channel of either (a black frame, a style in shades of one colour), where the
    original divides 0 by 0, is standardised to 0: the result takes the content's constant
    there. Computed in float64: it is a handful of 3 × 3 matrices.
    """
    flat = source.reshape(3, -1).astype(np.float64)
    mean, std = flat.mean(axis=1, keepdims=True), flat.std(axis=1, ddof=1, keepdims=True)
    standardised = (flat - mean) / _nonzero(std)
    whiten = np.linalg.inv(_matrix_sqrt(_regularised_correlation(standardised)))
    colour = _matrix_sqrt(target.regularised_correlation())
    transfer = colour @ whiten @ standardised
    return (transfer * target.std() + target.mean()).reshape(source.shape).astype(np.float32)
