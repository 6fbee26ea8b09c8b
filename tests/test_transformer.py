"""transformer.py against torchvision's rules (written out here from its source, since
torchvision does not install beside our CPU torch) and the original's CORAL in PyTorch."""
import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

import transformer


def photo(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


@pytest.mark.parametrize("size,expected", [((640, 480), (682, 512)), ((480, 640), (512, 682)),
                                           ((333, 250), (681, 512)), ((512, 512), (512, 512))])
def test_shorter_side_resize_follows_torchvision(size, expected):
    # torchvision: new_long = int(size * long / short), truncated; PIL bilinear.
    image = photo(*size)
    resized = transformer.resize_shorter_side(image, 512)
    assert resized.size == expected
    np.testing.assert_array_equal(np.asarray(resized), np.asarray(image.resize(expected, Image.BILINEAR)))


def test_size_zero_keeps_the_image():
    image = photo(250, 333)
    expected = np.asarray(image).transpose(2, 0, 1).astype(np.float32) / 255.0
    np.testing.assert_array_equal(transformer.test_transform(image, 0), expected)


def test_center_crop_rounds_like_torchvision():
    # 301 − 256 = 45 → offset round(22.5) = 22 (banker's rounding), where floor would also give 22;
    # 302 − 256 = 46 → 23; 303 − 256 = 47 → round(23.5) = 24, floor gives 23.
    for width, left in ((301, 22), (302, 23), (303, 24)):
        image = photo(width, 256)
        cropped = transformer.center_crop(image, 256)
        np.testing.assert_array_equal(np.asarray(cropped), np.asarray(image)[:, left:left + 256])


def test_train_transform_shape_range_and_determinism():
    image = photo(400, 300)
    first = transformer.train_transform(image, np.random.default_rng(3))
    again = transformer.train_transform(image, np.random.default_rng(3))
    assert first.shape == (3, 256, 256) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first, again)


def resized_then_cropped(image, rng, crop):
    """The original's training transform as torchvision runs it: the whole image resized to 2·crop square, then
    a crop × crop window whose top offset, then left one, are drawn in 0..crop."""
    top, left = rng.integers(0, crop + 1), rng.integers(0, crop + 1)
    big = np.asarray(image.resize((2 * crop, 2 * crop), Image.BILINEAR)).transpose(2, 0, 1).astype(np.float32)
    return big[:, top:top + crop, left:left + crop] / 255.0


def test_train_transform_gives_the_pixels_of_the_whole_image_resized_then_cropped():
    """train_transform resizes only the crop's part; the pixels must be those of the original's pipeline at any
    size: smaller than 512 (enlarged), larger (reduced), square, odd, a power of two (exact scales), 128 crops."""
    rng = np.random.default_rng(0)
    sizes = [(400, 300), (512, 512), (1024, 2048), (255, 257), (1600, 1200), (61, 4000), (3001, 97)]
    sizes += [tuple(int(n) for n in rng.integers(60, 2600, 2)) for _ in range(25)]
    for i, size in enumerate(sizes):
        smooth = photo(max(2, size[0] // 16), max(2, size[1] // 16), seed=i).resize(size, Image.BICUBIC)
        noise = np.random.default_rng(i).integers(-20, 21, (size[1], size[0], 3))
        image = Image.fromarray(np.clip(np.asarray(smooth) + noise, 0, 255).astype(np.uint8))
        for seed, crop in ((i, 256), (i + 100, 256), (i, 128)):
            got = transformer.train_transform(image, np.random.default_rng(seed), crop)
            expected = resized_then_cropped(image, np.random.default_rng(seed), crop)
            np.testing.assert_array_equal(got, expected, err_msg=f"{size}, seed {seed}, crop {crop}")


def test_array_round_trip_and_rounding():
    image = photo(17, 9)
    array = transformer.image_to_array(image)
    np.testing.assert_array_equal(transformer.array_to_image(array), np.asarray(image))
    values = np.array([-0.5, 0.0, 0.5 / 255, 0.499, 1.0, 7.0], dtype=np.float32).reshape(1, 1, 6).repeat(3, axis=0)
    assert transformer.array_to_image(values)[0, :, 0].tolist() == [0, 0, 1, 127, 255, 255]


def test_images_to_array_is_to_tensor_of_each_image_in_one_contiguous_batch():
    rng = np.random.default_rng(6)
    frames = [rng.integers(0, 256, (7, 5, 3), np.uint8) for _ in range(3)]
    batch = transformer.images_to_array(frames[:2] + [Image.fromarray(frames[2])])
    expected = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float().div(255) for f in frames])
    np.testing.assert_array_equal(batch, expected.numpy())
    assert batch.dtype == np.float32 and batch.flags.c_contiguous


def test_array_to_image_rounds_as_save_image_into_a_contiguous_image():
    # torchvision's save_image: mul(255).add_(0.5).clamp_(0, 255).to(uint8). The image must be C-contiguous:
    # PyAV copies such a frame at once, a strided view value by value, many times slower.
    values = np.random.default_rng(5).normal(0.5, 0.6, (3, 37, 53)).astype(np.float32)
    image = transformer.array_to_image(values[:, 1:, 2:])  # a crop, as test_video.py crops the decoder's output
    expected = torch.from_numpy(values[:, 1:, 2:].copy()).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    np.testing.assert_array_equal(image, expected.permute(1, 2, 0).numpy())
    assert image.flags.c_contiguous


def saved(image, fmt="PNG", **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    buffer.seek(0)
    return buffer


def test_modes_become_rgb():
    grey = Image.fromarray(np.full((4, 5), 100, np.uint8))
    assert np.asarray(transformer.load_image(saved(grey))).tolist() == [[[100] * 3] * 5] * 4

    rgba = Image.new("RGBA", (3, 2), (10, 20, 30, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    pixels = np.asarray(transformer.load_image(saved(rgba)))
    assert pixels[0, 0].tolist() == [10, 20, 30] and pixels[1, 2].tolist() == [255, 255, 255]

    palette = photo(6, 4).convert("P", palette=Image.ADAPTIVE, colors=8)
    assert transformer.load_image(saved(palette)).mode == "RGB"

    sixteen = Image.fromarray(np.array([[0, 128 * 257, 65535]], np.uint16))
    loaded = np.asarray(transformer.load_image(saved(sixteen)))
    assert loaded.shape == (1, 3, 3) and loaded[0, :, 0].tolist() == [0, 128, 255]

    floating = Image.fromarray(np.array([[0.0, 128 / 255, 1.0, 7.5, -1.0, np.nan]], np.float32))  # a TIFF of mode F
    loaded = np.asarray(transformer.load_image(saved(floating, "TIFF")))
    assert loaded.shape == (1, 6, 3) and loaded[0, :, 0].tolist() == [0, 128, 255, 255, 0, 0]


def test_exif_orientation_is_applied():
    image = photo(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    loaded = transformer.load_image(saved(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (20, 40)


def srgb_profile_tags():
    """The tags of Pillow's sRGB ICC profile: {signature: data}."""
    data = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    count = struct.unpack(">I", data[128:132])[0]  # the tag table: after the 128-byte header, 12 bytes a tag
    table = [struct.unpack(">4sII", data[132 + 12 * i:144 + 12 * i]) for i in range(count)]
    return {signature: data[offset:offset + size] for signature, offset, size in table}


def icc_profile(space, tags):
    """An ICC profile: sRGB's header for colour space `space` (b"RGB ", b"GRAY"), with `tags`."""
    header = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()[:128])
    header[16:20], header[84:100] = space, bytes(16)  # the colour space; no profile ID to check
    table, data = b"", b""
    for signature, body in tags.items():
        table += struct.pack(">4sII", signature, 132 + 12 * len(tags) + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    profile = header + struct.pack(">I", len(tags)) + table + data
    profile[:4] = struct.pack(">I", len(profile))
    return bytes(profile)


def swapped_primaries_profile():
    """sRGB with its red and green primaries swapped: stored red is shown green."""
    tags = srgb_profile_tags()
    tags[b"rXYZ"], tags[b"gXYZ"] = tags[b"gXYZ"], tags[b"rXYZ"]
    return icc_profile(b"RGB ", tags)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_colour_profile_is_applied(fmt):
    """A picture is taken in sRGB, as a viewer shows it: a phone's photos carry Display P3, a scan Adobe RGB.
    (And turned upright: the profile survives the EXIF rotation.)"""
    red, exif = Image.new("RGB", (8, 4), (255, 0, 0)), Image.Exif()
    exif[0x0112] = 6
    loaded = transformer.load_image(saved(red, fmt, icc_profile=swapped_primaries_profile(), exif=exif.tobytes()))
    assert loaded.size == (4, 8) and np.abs(np.asarray(loaded).astype(int) - (0, 255, 0)).max() <= 2


def test_a_grey_profile_is_applied_to_a_grey_picture():
    """A profile of the picture's own channels (grey here; CMYK likewise) converts from those: linear grey
    128 is sRGB's 188."""
    tags = srgb_profile_tags()
    linear = icc_profile(b"GRAY", {b"desc": tags[b"desc"], b"wtpt": tags[b"wtpt"], b"kTRC": b"curv" + bytes(8)})
    grey = Image.new("L", (4, 4), 128)
    assert np.asarray(transformer.load_image(saved(grey, icc_profile=linear))).tolist() == [[[188] * 3] * 4] * 4


def test_a_damaged_colour_profile_is_ignored():
    red, whole = Image.new("RGB", (8, 8), (255, 0, 0)), swapped_primaries_profile()
    unreadable_space = whole[:16] + b"\xff" * 4 + whole[20:]
    for profile in (b"not a profile", whole[:200], unreadable_space):
        assert np.asarray(transformer.load_image(saved(red, icc_profile=profile))).tolist() == [[[255, 0, 0]] * 8] * 8


def test_training_reads_pictures_as_the_original_does():
    """Without EXIF rotation or colour profile (PIL's `convert('RGB')`), as the original's data loader."""
    red = Image.new("RGB", (8, 4), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = transformer.load_image(saved(red, icc_profile=swapped_primaries_profile(), exif=exif.tobytes()),
                                    as_shown=False)
    assert loaded.size == (8, 4) and np.asarray(loaded).tolist() == [[[255, 0, 0]] * 8] * 4


def torch_coral(source, target):
    """The original's coral (pytorch-AdaIN function.py), in PyTorch float64."""
    def flatten_mean_std(feat):
        flat = feat.view(3, -1)
        return flat, flat.mean(dim=-1, keepdim=True), flat.std(dim=-1, keepdim=True)

    def mat_sqrt(x):
        u, d, v = torch.svd(x)
        return torch.mm(torch.mm(u, d.pow(0.5).diag()), v.t())

    s, s_mean, s_std = flatten_mean_std(source)
    s_norm = (s - s_mean) / s_std
    s_cov = torch.mm(s_norm, s_norm.t()) + torch.eye(3, dtype=s.dtype)
    t, t_mean, t_std = flatten_mean_std(target)
    t_norm = (t - t_mean) / t_std
    t_cov = torch.mm(t_norm, t_norm.t()) + torch.eye(3, dtype=t.dtype)
    out = torch.mm(mat_sqrt(t_cov), torch.mm(torch.inverse(mat_sqrt(s_cov)), s_norm))
    return (out * t_std + t_mean).view(source.size())


def colours_of(picture):
    return transformer.ColourStatistics().add(picture)


def as_array(picture):
    """HWC uint8 → CHW float64 in [0, 1], exactly."""
    return picture.transpose(2, 0, 1) / 255.0


def test_colour_statistics_of_several_pictures_are_those_of_all_their_pixels():
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((5, 7), (9, 4), (2, 2))]
    colours = transformer.ColourStatistics()
    for picture in pictures:
        colours.add(picture)
    pixels = np.concatenate([as_array(picture).reshape(3, -1) for picture in pictures], axis=1)
    assert colours.count == pixels.shape[1]
    np.testing.assert_allclose(colours.mean()[:, 0], pixels.mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(colours.scatter() / (colours.count - 1), np.cov(pixels), rtol=1e-12)
    np.testing.assert_allclose(colours.std()[:, 0], pixels.std(axis=1, ddof=1), rtol=1e-12)
    grey = np.full((4, 5, 3), 77, np.uint8)  # constant pictures: exactly no variance, however many
    assert not transformer.ColourStatistics().add(grey).add(grey).add(grey).scatter().any()


def test_coral_equals_the_original_for_equal_pixel_counts():
    rng = np.random.default_rng(2)
    style = rng.random((3, 30, 40)).astype(np.float32) * np.array([1.0, 0.3, 0.6], np.float32)[:, None, None]
    content = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    ours = transformer.coral(style, colours_of(content))
    expected = torch_coral(torch.from_numpy(style).double(), torch.from_numpy(as_array(content))).numpy()
    assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max()


def test_coral_to_a_content_with_constant_channels_takes_their_constants():
    """A black frame, or a picture in shades of red alone: where the original divides 0 by 0 (NaN, then an SVD
    that fails), the style takes the content's constant channels and the others' statistics."""
    rng = np.random.default_rng(4)
    style = rng.random((3, 30, 40)).astype(np.float32)
    assert not transformer.coral(style, colours_of(np.zeros((20, 20, 3), np.uint8))).any()
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = rng.integers(0, 256, (20, 30))
    ours = transformer.coral(style, colours_of(red))
    assert not ours[1:].any()
    assert ours[0].mean() == pytest.approx(red[..., 0].mean() / 255, abs=1e-6)
    assert ours[0].std(ddof=1) == pytest.approx(red[..., 0].std(ddof=1) / 255, rel=1e-2)


def test_coral_of_a_style_with_a_constant_channel_gives_the_contents_colours():
    rng = np.random.default_rng(5)
    style = rng.random((3, 30, 40)).astype(np.float32)
    style[2] = 0.7  # shades of one hue
    content = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ours = transformer.coral(style, colours_of(content))
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours.reshape(3, -1).mean(axis=1), as_array(content).reshape(3, -1).mean(axis=1),
                               atol=1e-6)


def test_coral_gives_the_content_colour_statistics_at_any_size():
    rng = np.random.default_rng(2)
    style = rng.random((3, 40, 50)).astype(np.float32) * np.array([1.0, 0.3, 0.6], np.float32)[:, None, None]
    mixing = np.array([[0.5, 0.2, 0.1], [0.1, 0.4, 0.1], [0.2, 0.1, 0.3]])
    content = np.rint((np.einsum("ij,hwj->hwi", mixing, rng.random((30, 20, 3))) + 0.1) * 255).astype(np.uint8)
    ours = transformer.coral(style, colours_of(content))
    content_pixels = as_array(content).reshape(3, -1)
    np.testing.assert_allclose(ours.reshape(3, -1).mean(axis=1), content_pixels.mean(axis=1), atol=1e-5)
    # The covariance becomes the content's, up to the small ridge of the formula.
    ours_cov, content_cov = np.cov(ours.reshape(3, -1)), np.cov(content_pixels)
    assert np.abs(ours_cov - content_cov).max() <= 1e-2 * np.abs(content_cov).max()
    # The original's unnormalised sums shrink it by N_content / N_style here (600 / 2000).
    original = torch_coral(torch.from_numpy(style).double(), torch.from_numpy(as_array(content))).numpy()
    assert np.cov(original.reshape(3, -1))[0, 0] < 0.5 * content_cov[0, 0]
