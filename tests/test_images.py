"""som.images: every input becomes an upright HxWx3 uint8 RGB array or one typed error."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from som.images import ImageLoadError, decode_image, load_image, resize_short_side, resized_size
from tests.helpers.data import SHARED_IMAGES, data_path


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose valid IHDR claims width x height, with one tiny IDAT (one row)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def assert_rgb(rgb: np.ndarray, height: int, width: int) -> None:
    assert rgb.dtype == np.uint8
    assert rgb.shape == (height, width, 3)


# --- EXIF orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "shape", "first", "last"),
    [
        # A 20x40 image, left half red, right half blue. Orientation 6 = rotate 90 deg clockwise
        # to display (left edge ends on top), 8 = 90 deg counter-clockwise, 3 = 180 deg.
        (6, (40, 20), "red", "blue"),
        (8, (40, 20), "blue", "red"),
        (3, (20, 40), "blue", "red"),
    ],
)
def test_exif_orientation_is_applied(orientation, shape, first, last):
    """A phone photo with an EXIF Orientation tag comes out upright, as viewers show it."""
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = colours["red"]
    pixels[:, 20:] = colours["blue"]
    picture = Image.fromarray(pixels)
    exif = picture.getexif()
    exif[0x0112] = orientation
    rgb = decode_image(encode(picture, "JPEG", exif=exif, quality=95), "phone.jpg").rgb

    assert_rgb(rgb, *shape)
    # Sample well inside each half, away from the JPEG-blurred boundary.
    if shape[0] > shape[1]:  # rotated: halves are now top and bottom
        first_px, last_px = rgb[3, shape[1] // 2], rgb[-4, shape[1] // 2]
    else:
        first_px, last_px = rgb[shape[0] // 2, 3], rgb[shape[0] // 2, -4]
    np.testing.assert_allclose(first_px, colours[first], atol=6)
    np.testing.assert_allclose(last_px, colours[last], atol=6)


# --- modes --------------------------------------------------------------------------------------


def test_palette_without_transparency_uses_palette_colours():
    """A palette (P) PNG maps each index to its palette colour."""
    picture = Image.new("P", (4, 3), 0)
    picture.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    picture.putpixel((1, 0), 1)
    picture.putpixel((3, 2), 2)
    rgb = decode_image(encode(picture, "PNG"), "p.png").rgb
    assert_rgb(rgb, 3, 4)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [0, 255, 0]
    assert rgb[2, 3].tolist() == [10, 20, 30]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited_on_white(fmt):
    """A palette image's transparent index becomes white, not its (arbitrary) palette colour."""
    picture = Image.new("P", (4, 4), 0)
    picture.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))  # index 0 black, 1 green
    picture.putpixel((2, 1), 1)
    rgb = decode_image(encode(picture, fmt, transparency=0), f"p.{fmt.lower()}").rgb
    assert_rgb(rgb, 4, 4)
    assert rgb[1, 2].tolist() == [0, 255, 0]
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert (rgb.reshape(-1, 3) == 255).all(axis=1).sum() == 15


def test_grayscale_becomes_three_equal_channels():
    """L images keep their gray levels in all three channels."""
    gray = np.arange(0, 240, 20, dtype=np.uint8).reshape(3, 4)
    rgb = decode_image(encode(Image.fromarray(gray, "L"), "PNG"), "g.png").rgb
    assert_rgb(rgb, 3, 4)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], gray)


def test_one_bit_image_becomes_black_and_white():
    """Bilevel (mode 1) images load as 0/255 RGB."""
    bits = Image.new("1", (3, 2), 0)
    bits.putpixel((1, 1), 1)
    rgb = decode_image(encode(bits, "PNG"), "b.png").rgb
    assert_rgb(rgb, 2, 3)
    assert rgb[1, 1].tolist() == [255, 255, 255]
    assert rgb[0, 0].tolist() == [0, 0, 0]


def test_gray_alpha_is_composited_on_white():
    """LA: opaque pixels keep their gray, transparent ones turn white, half alpha blends."""
    values = np.array([[[100, 255], [100, 0], [0, 128]]], dtype=np.uint8)  # (1, 3, 2)
    rgb = decode_image(encode(Image.fromarray(values, "LA"), "PNG"), "la.png").rgb
    assert_rgb(rgb, 1, 3)
    assert rgb[0, 0].tolist() == [100, 100, 100]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    np.testing.assert_allclose(rgb[0, 2], [127, 127, 127], atol=1)


def test_rgba_is_composited_on_white():
    """RGBA: alpha is composited over white (not dropped, which would expose hidden colours)."""
    values = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128], [0, 200, 0, 64]]], dtype=np.uint8)
    rgb = decode_image(encode(Image.fromarray(values, "RGBA"), "PNG"), "a.png").rgb
    assert_rgb(rgb, 1, 4)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [0, 0, 255]
    np.testing.assert_allclose(rgb[0, 2], [127, 127, 127], atol=1)
    np.testing.assert_allclose(rgb[0, 3], [191, 241, 191], atol=1)


def test_cmyk_jpeg_converts_to_rgb():
    """CMYK JPEGs (print scans) load as RGB with the right colours."""
    picture = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red
    picture.paste((255, 0, 0, 0), (16, 0, 32, 8))  # cyan
    picture.paste((0, 0, 0, 255), (16, 8, 32, 16))  # black via K
    data = encode(picture, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    rgb = decode_image(data, "scan.jpg").rgb
    assert_rgb(rgb, 16, 32)
    np.testing.assert_allclose(rgb[8, 4], [255, 0, 0], atol=8)
    np.testing.assert_allclose(rgb[3, 27], [0, 255, 255], atol=8)
    np.testing.assert_allclose(rgb[12, 27], [0, 0, 0], atol=8)


def test_sixteen_bit_png_is_scaled_not_clipped():
    """16-bit grayscale spans 0..65535; values are scaled to 0..255 (clipping would saturate)."""
    values = np.array([[0, 257, 1000, 30000, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    rgb = decode_image(data, "depth.png").rgb
    assert_rgb(rgb, 1, 5)
    assert rgb[0, :, 0].tolist() == [0, 1, 4, 117, 255]
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


# --- pixel bombs --------------------------------------------------------------------------------


@pytest.fixture
def no_decoding(monkeypatch):
    """Makes any attempt to decode pixel data fail the test."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_real_image_over_max_pixels_is_refused_before_decoding(no_decoding):
    """The pixel limit is checked from the header: an oversized image is never decoded."""
    path = data_path("waterview.jpg")  # 1000 x 667
    with pytest.raises(ImageLoadError) as info:
        load_image(path, max_pixels=1000 * 667 - 1)
    assert "exceeds the limit of 666999" in info.value.reason
    assert str(path) in str(info.value)


def test_image_at_exactly_max_pixels_loads():
    """The limit is inclusive: width*height == max_pixels is allowed."""
    assert load_image(data_path("waterview.jpg"), max_pixels=1000 * 667).rgb.shape == (667, 1000, 3)


def test_png_header_claiming_huge_size_is_refused(no_decoding):
    """A tiny file whose header claims 12000x9000 (108 Mpx, over the default limit) is refused."""
    with pytest.raises(ImageLoadError) as info:
        decode_image(png_claiming(12000, 9000), "bomb.png")
    assert "12000x9000" in info.value.reason and "exceeds the limit" in info.value.reason


def test_png_header_over_pillows_own_limit_is_a_typed_error():
    """Past Pillow's own bomb limit (~179 Mpx) its DecompressionBombError becomes ImageLoadError."""
    with pytest.raises(ImageLoadError) as info:
        decode_image(png_claiming(50000, 50000), "bomb.png")
    assert "too many pixels" in info.value.reason


# --- unusable inputs ----------------------------------------------------------------------------


def test_zero_byte_file(tmp_path):
    """An empty file is reported as empty, naming the file."""
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "empty file (0 bytes)"
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: ")


def test_text_file(tmp_path):
    """A non-image file is reported as an unrecognised format."""
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n" * 10)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "not a recognised image format"
    assert str(path) in str(info.value)


def test_missing_path(tmp_path):
    """A missing file raises ImageLoadError (not FileNotFoundError) with the OS's reason."""
    path = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "cannot read file: No such file or directory"
    assert str(path) in str(info.value)


def test_directory_path(tmp_path):
    """A directory given as an image is a typed error too."""
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path)
    assert info.value.reason.startswith("cannot read file")


def test_truncated_jpeg(tmp_path):
    """A real photo cut in half (an interrupted upload) is reported as truncated."""
    data = data_path("extreme_ironing.jpg").read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason.startswith("corrupt or truncated image data")
    assert "truncated" in info.value.reason
    assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [2, 20, 100, 300, 600, 5000, -2000, -10])
def test_jpeg_cut_anywhere_raises_only_the_typed_error(cut):
    """Wherever a JPEG is cut (inside its header markers too), the error is ImageLoadError.

    Regression: cuts inside the header made Pillow raise a bare OSError("Truncated File Read").
    """
    data = data_path("extreme_ironing.jpg").read_bytes()
    with pytest.raises(ImageLoadError) as info:
        decode_image(data[:cut], "cut.jpg")
    assert info.value.reason  # a reason, whichever stage noticed


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data", "ignore:Truncated File Read")
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "PPM", "BMP", "TIFF", "GIF"])
def test_other_formats_cut_short_raise_only_the_typed_error(fmt):
    """Truncated files of every common format give ImageLoadError, never a raw Pillow error."""
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), fmt)
    for cut in sorted({1, 5, 12, 20, 40, 80, len(data) // 3, len(data) // 2, len(data) - 40}):
        with pytest.raises(ImageLoadError):
            decode_image(data[:cut], f"cut.{fmt.lower()}")


def test_real_truncated_png_from_the_wild():
    """som_logo.png from microsoft/SoM is cut at 256 KiB: a valid header, then missing data."""
    path = data_path("som_logo.png")
    assert path.stat().st_size == 262144
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert "truncated" in info.value.reason
    assert str(path) in str(info.value)


# --- identity and real photos -------------------------------------------------------------------


def test_sha256_is_of_the_source_bytes(tmp_path):
    """sha256 identifies the file's bytes (manifests dedupe on it), for paths and raw bytes."""
    path = data_path("extreme_ironing.jpg")
    data = path.read_bytes()
    expected = hashlib.sha256(data).hexdigest()
    loaded = load_image(path)
    assert loaded.sha256 == expected
    assert loaded.source == str(path)
    assert decode_image(data, "s3://bucket/x.jpg").sha256 == expected
    assert load_image("s3://bucket/x.jpg", data=data).source == "s3://bucket/x.jpg"


def _real_images() -> list[Path]:
    found = sorted(p for p in SHARED_IMAGES.glob("*/*") if p.suffix in (".jpg", ".png"))
    return found or [data_path("extreme_ironing.jpg"), data_path("waterview.jpg")]


@pytest.mark.parametrize("path", _real_images(), ids=lambda p: p.name)
def test_real_reference_images(path):
    """Every real reference photo loads to the same pixels Pillow gives (RGBA on white), or,
    for the known-truncated one, raises the typed error."""
    if path.name == "som_logo.png":
        with pytest.raises(ImageLoadError):
            load_image(path)
        return
    loaded = load_image(path)
    with Image.open(path) as picture:
        picture.load()
        if picture.mode == "RGBA":
            white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
            expected = np.asarray(Image.alpha_composite(white, picture).convert("RGB"))
        else:
            expected = np.asarray(picture.convert("RGB"))
    assert_rgb(loaded.rgb, expected.shape[0], expected.shape[1])
    np.testing.assert_array_equal(loaded.rgb, expected)
    assert (loaded.width, loaded.height) == (expected.shape[1], expected.shape[0])


# --- resize_short_side --------------------------------------------------------------------------


def test_resize_landscape_to_640_truncates_the_long_side():
    """570x380 -> 960x640 (SoM's own 960x640 output of this photo), scale 640/380."""
    rgb = load_image(data_path("extreme_ironing.jpg")).rgb
    assert rgb.shape == (380, 570, 3)
    resized, scale = resize_short_side(rgb, 640)
    assert resized.shape == (640, 960, 3) and resized.dtype == np.uint8
    assert scale == pytest.approx(640 / 380)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (333, 500, (640, 960)),  # 640*500/333 = 960.96 -> 960 (truncated, as torchvision)
        (500, 333, (960, 640)),  # portrait
        (570, 380, (960, 640)),  # portrait
        (667, 1000, (640, 959)),  # downscale: 959.52 -> 959
        (300, 300, (640, 640)),
    ],
)
def test_resize_sizes(height, width, expected):
    """The short side becomes 640 and the long side is truncated, for both orientations."""
    resized, scale = resize_short_side(np.zeros((height, width, 3), np.uint8), 640)
    assert resized.shape[:2] == expected
    assert scale == pytest.approx(640 / min(height, width))


@pytest.mark.parametrize("name", ["extreme_ironing.jpg", "waterview.jpg"])  # up- and downscale
def test_resize_is_close_to_torchvision_bicubic(name):
    """Pixels stay close to torchvision's Resize(640, BICUBIC) (PIL bicubic), which the SoM
    annotator uses: catches swapped axes, channel mix-ups or wrong interpolation."""
    rgb = load_image(data_path(name)).rgb
    resized, _ = resize_short_side(rgb, 640)
    reference = np.asarray(Image.fromarray(rgb).resize(resized.shape[1::-1], Image.Resampling.BICUBIC))
    difference = np.abs(resized.astype(np.int16) - reference)
    assert difference.mean() < 1.0
    assert np.percentile(difference, 99) <= 10


def test_resize_zero_or_same_keeps_the_image():
    """short_side=0 (or an image already at the size) returns the input unchanged, scale 1."""
    rgb = np.random.default_rng(1).integers(0, 256, (380, 570, 3), dtype=np.uint8)
    for short_side in (0, 380):
        resized, scale = resize_short_side(rgb, short_side)
        assert resized is rgb
        assert scale == 1.0


def test_resize_refuses_an_extreme_aspect_ratio_before_allocating():
    strip = np.zeros((1, 3000, 3), np.uint8)  # 640 short side would make it 1,920,000x640
    with pytest.raises(ImageLoadError) as error:
        resize_short_side(strip, 640, source="strip.png")
    assert error.value.source == "strip.png" and "aspect ratio" in error.value.reason and "3000x1" in error.value.reason


def test_resize_applies_the_pixel_limit_to_the_resized_size():
    with pytest.raises(ImageLoadError, match="resized to 40000x20000"):
        resized_size(400, 200, 20000, source="big")
    assert resized_size(400, 200, 20000, max_pixels=10**9) == (40000, 20000)


def test_resize_limits_are_configurable_and_panoramas_pass():
    assert resized_size(10000, 1000, 640) == (6400, 640)  # a 10:1 panorama
    assert resized_size(100, 2900, 640) == (640, 18560)  # 29:1, under the default 30
    with pytest.raises(ImageLoadError):
        resized_size(400, 10, 16, max_aspect_ratio=20)
    assert resized_size(400, 10, 16, max_aspect_ratio=0) == (640, 16)
    image, scale = resize_short_side(np.zeros((10, 200, 3), np.uint8), 0)
    assert image.shape == (10, 200, 3) and scale == 1.0
