"""The runtime's fast paths give the results of the plain ones, bit for bit: OpenCV decoding of plain JPEGs and PNGs
(Pillow's pixels), the one-table LUT and the resize straight into the tensor, the 256-entry dequantization table and
the top-k partition. Files the fast decode must not take are left to Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from edgekit.contract import ColorOrder, Contract, Layout, Normalization, OutputKind
from edgekit.errors import InputFileError
from edgekit.pixels import open_rgb, resize, to_color_order
from edgekit.runtime import decoding
from edgekit.runtime.decoding import decode_plain, plain_header
from edgekit.runtime.preprocess import Preprocessor
from edgekit.runtime.reading import read_image_file
from edgekit.runtime.scoring import Scorer, top_indices
from edgekit.runtime.tensors import TensorInfo
from tests.conftest import shared_path


def _photo(h, w, seed=0, grey=False):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 100 * np.sin(x / (5.0 + c) + c) * np.cos(y / 7.0 - c) for c in range(3)], -1)
    img = np.clip(img + rng.normal(0, 15, img.shape), 0, 255).astype(np.uint8)
    return img[..., 0] if grey else img


def _save(path, arr, fmt="JPEG", **kw):
    from PIL import Image

    Image.fromarray(arr).save(path, fmt, **kw)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with(path, arr, *chunks: bytes):
    """A PNG of ``arr`` with extra chunks inserted after IHDR."""
    buf = io.BytesIO()
    _save(buf, arr, "PNG")
    data = buf.getvalue()
    at = 8 + 25  # signature + IHDR
    path.write_bytes(data[:at] + b"".join(chunks) + data[at:])
    return path


def _exif(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _exif_big_endian(orientation: int) -> bytes:
    """EXIF in Motorola byte order (Pillow writes Intel order), with one entry: Orientation."""
    return b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">HHHIHHI", 1, 0x0112, 3, 1, orientation, 0, 0)


def _srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _plain_files(tmp_path):
    rgb, grey = _photo(61, 97, seed=1), _photo(45, 70, seed=2, grey=True)
    return {
        "baseline q90 4:2:0": _save(tmp_path / "a.jpg", rgb, quality=90),
        "q50 4:4:4": _save(tmp_path / "b.jpg", rgb, quality=50, subsampling=0),
        "4:2:2": _save(tmp_path / "c.jpg", rgb, quality=75, subsampling=1),
        "progressive optimized": _save(tmp_path / "d.jpg", rgb, quality=85, progressive=True, optimize=True),
        "grey": _save(tmp_path / "e.jpg", grey, quality=80),
        "ICC profile": _save(tmp_path / "f.jpg", rgb, icc_profile=_srgb_icc()),
        "EXIF upright": _save(tmp_path / "g.jpg", rgb, exif=_exif(1)),
        "big-endian EXIF upright": _save(tmp_path / "g2.jpg", rgb, exif=_exif_big_endian(1)),
        "png rgb": _save(tmp_path / "h.png", rgb, "PNG"),
        "png grey": _save(tmp_path / "i.png", grey, "PNG"),
        "png gamma, sRGB, ICC, text": _png_with(tmp_path / "j.png", rgb, _chunk(b"gAMA", struct.pack(">I", 45455)),
                                                _chunk(b"sRGB", b"\x00"), _chunk(b"tEXt", b"Software\x00edgekit"),
                                                _chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(_srgb_icc()))),
    }


def _pillow_rgb(path):
    return np.asarray(open_rgb(path), np.uint8)


def _as_rgb(img):
    return np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., ::-1]


def test_plain_jpegs_and_pngs_decode_through_opencv_to_pillows_pixels(tmp_path):
    for name, path in _plain_files(tmp_path).items():
        header = plain_header(path.read_bytes())
        assert header is not None, name
        img = decode_plain(path)
        assert img is not None, name
        assert (img.ndim == 2) == header.grey and img.shape[:2] == (header.height, header.width), name
        np.testing.assert_array_equal(_as_rgb(img), _pillow_rgb(path), err_msg=name)
        order = read_image_file(path, "auto")[1]
        assert order == (ColorOrder.GRAY if header.grey else ColorOrder.BGR), name


def _not_plain_files(tmp_path):
    rgb = _photo(40, 50, seed=3)
    whole = (tmp_path / "whole.jpg")
    _save(whole, rgb)
    data = whole.read_bytes()
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description tiff:Orientation=\"6\"/></x:xmpmeta>"
    with_xmp = data[:2] + struct.pack(">BBH", 0xFF, 0xE1, len(xmp) + 2) + xmp + data[2:]
    (tmp_path / "xmp.jpg").write_bytes(with_xmp)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "trailing.jpg").write_bytes(data + b"garbage")
    png = _save(tmp_path / "p.png", rgb, "PNG").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[:-12])
    return {
        "EXIF rotated": _save(tmp_path / "rot.jpg", rgb, exif=_exif(6)),
        "big-endian EXIF mirrored": _save(tmp_path / "rot2.jpg", rgb, exif=_exif_big_endian(2)),
        "XMP rotated": tmp_path / "xmp.jpg",
        "CMYK": _save_cmyk(tmp_path / "cmyk.jpg", rgb),
        "cut JPEG": tmp_path / "cut.jpg",
        "JPEG with data after its end": tmp_path / "trailing.jpg",
        "RGBA PNG": _save(tmp_path / "rgba.png", np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "PNG"),
        "palette PNG": _save_palette(tmp_path / "pal.png", rgb),
        "16-bit grey PNG": _save16(tmp_path / "g16.png", rgb[..., 0]),
        "transparent colour": _png_with(tmp_path / "trns.png", rgb, _chunk(b"tRNS", b"\x00\x01\x00\x02\x00\x03")),
        "eXIf chunk": _png_with(tmp_path / "exif.png", rgb, _chunk(b"eXIf", _exif(3).removeprefix(b"Exif\x00\x00"))),
        "EXIF in a text chunk": _png_with(tmp_path / "rawexif.png", rgb,
                                          _chunk(b"tEXt", b"Raw profile type exif\x00\nexif\n   6\n00")),
        "cut PNG": tmp_path / "cut.png",
        "BMP": _save(tmp_path / "b.bmp", rgb, "BMP"),
    }


def _save_cmyk(path, rgb):
    from PIL import Image

    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG")
    return path


def _save_palette(path, rgb):
    from PIL import Image

    Image.fromarray(rgb).convert("P").save(path, "PNG")
    return path


def _save16(path, grey):
    from PIL import Image

    Image.fromarray(grey.astype(np.uint16) * 257).save(path, "PNG")
    return path


def test_files_only_pillow_reads_right_go_to_pillow(tmp_path):
    for name, path in _not_plain_files(tmp_path).items():
        assert plain_header(path.read_bytes()) is None and decode_plain(path) is None, name
        try:
            expected = _pillow_rgb(path)
        except InputFileError as exc:  # the cut files: the same error either way
            with pytest.raises(InputFileError) as auto:
                read_image_file(path, "auto")
            assert auto.value.problem == read_image_file_error(path), name
            assert "not a readable image" in str(exc) or "truncated" in str(exc), name
            continue
        img, order = read_image_file(path, "auto")
        assert order == ColorOrder.RGB, name  # Pillow's pixels, as they always were
        np.testing.assert_array_equal(img, expected, err_msg=name)


def read_image_file_error(path) -> str:
    with pytest.raises(InputFileError) as exc:
        read_image_file(path, "pillow")
    return exc.value.problem


def test_a_decoder_that_disagrees_with_pillow_sends_the_format_back_to_pillow(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.jpg", _photo(30, 40))
    monkeypatch.setattr(decoding, "_agrees", {})
    monkeypatch.setattr(decoding, "open_rgb", lambda p: open_rgb(p).rotate(180))  # a Pillow that decodes otherwise
    assert decode_plain(path) is None
    assert decoding._agrees == {"JPEG": False}
    assert read_image_file(path, "auto")[1] == ColorOrder.RGB  # and every later JPEG goes to Pillow


def test_the_real_cats_and_dogs_photos_decode_to_pillows_pixels():
    folder = shared_path("data", "cats_and_dogs_filtered", "validation")
    files = sorted(folder.rglob("*.jpg"))[::25]
    assert files
    for path in files:
        assert plain_header(path.read_bytes()) is not None, path
        np.testing.assert_array_equal(_as_rgb(decode_plain(path)), _pillow_rgb(path), err_msg=str(path))


# ---- preprocessing: the same tensor through every path --------------------------------------------------------
CONTRACTS = {
    "float, one table": (Contract(height=24, width=32, normalization=Normalization.mean_std((127.5,), (127.5,))),
                         TensorInfo("x", (1, 24, 32, 3), np.dtype(np.float32))),
    "float, per-channel": (Contract(height=24, width=32, normalization=Normalization.mean_std(
        (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))), TensorInfo("x", (1, 24, 32, 3), np.dtype(np.float32))),
    "uint8 pixels as they are": (Contract(height=24, width=32, normalization=Normalization.in_model()),
                                 TensorInfo("x", (1, 24, 32, 3), np.dtype(np.uint8), 1.0, 0)),
    "int8 pixel - 128": (Contract(height=24, width=32, normalization=Normalization.in_model()),
                         TensorInfo("x", (1, 24, 32, 3), np.dtype(np.int8), 1.0, -128)),
    "int8 quantized": (Contract(height=24, width=32, normalization=Normalization.mean_std((127.5,), (127.5,))),
                       TensorInfo("x", (1, 24, 32, 3), np.dtype(np.int8), 1 / 128, 3)),
    "grey float": (Contract(height=28, width=28, channels=1, color_order=ColorOrder.GRAY,
                            normalization=Normalization.mean_std((0.0,), (255.0,))),
                   TensorInfo("x", (1, 28, 28, 1), np.dtype(np.float32))),
    "grey uint8": (Contract(height=28, width=28, channels=1, color_order=ColorOrder.GRAY,
                            normalization=Normalization.in_model()),
                   TensorInfo("x", (1, 28, 28, 1), np.dtype(np.uint8))),
    "BGR model": (Contract(height=24, width=32, color_order=ColorOrder.BGR, normalization=Normalization.in_model()),
                  TensorInfo("x", (1, 24, 32, 3), np.dtype(np.uint8))),
    "NCHW float": (Contract(height=24, width=32, layout=Layout.NCHW,
                            normalization=Normalization.mean_std((127.5,), (127.5,))),
                   TensorInfo("x", (1, 3, 24, 32), np.dtype(np.float32))),
}


def _expected(contract: Contract, tensor: TensorInfo, rgb: np.ndarray) -> np.ndarray:
    """The plain formula: resize, then the contract's colour order, then pixel * a + b (quantized: / scale + zero
    point, rounded, clipped), computed in float64 and cast once."""
    pix = to_color_order(resize(rgb, contract), ColorOrder.RGB, contract.color_order)
    pix = (pix if pix.ndim == 3 else pix[..., None]).astype(np.float64)
    a, b = contract.normalization.affine(contract.channels)
    if np.issubdtype(tensor.dtype, np.integer):
        scale, zp = (tensor.scale, tensor.zero_point) if tensor.quantized else (1.0, 0)
        a, b = a / scale, b / scale + zp
        info = np.iinfo(tensor.dtype)
        out = np.clip(np.rint(pix * a + b), info.min, info.max).astype(tensor.dtype)
    else:
        out = (pix * a + b).astype(tensor.dtype)
    return (out.transpose(2, 0, 1) if contract.layout == Layout.NCHW else out)[None]


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_every_path_into_the_tensor_gives_the_plain_formulas_values(name):
    contract, tensor = CONTRACTS[name]
    pre = Preprocessor(contract, tensor)
    rgb = _photo(48, 64, seed=5)
    grey = _photo(48, 64, seed=6, grey=True)
    at_size = _photo(contract.height, contract.width, seed=7)
    cases = [(rgb, ColorOrder.RGB, rgb), (rgb[..., ::-1].copy(), ColorOrder.BGR, rgb),
             (grey, ColorOrder.RGB, np.repeat(grey[..., None], 3, 2)),
             (grey[..., None], ColorOrder.BGR, np.repeat(grey[..., None], 3, 2)),
             (at_size, ColorOrder.RGB, at_size), (at_size[..., ::-1].copy(), ColorOrder.BGR, at_size)]
    for i, (img, order, as_rgb) in enumerate(cases):
        got = pre(img, order)
        expected = _expected(contract, tensor, as_rgb)
        assert got.dtype == tensor.dtype and got.shape == tensor.shape, (name, i)
        np.testing.assert_array_equal(got, expected, err_msg=f"{name}, case {i}")
        assert pre.into_tensor(img, order) is pre.into_tensor(img, order)  # still the one preallocated tensor


def test_a_grey_file_gives_the_same_tensor_as_its_rgb_decode(tmp_path):
    """The fast path hands a grey JPEG over as one channel; Pillow's path as three equal ones."""
    path = _save(tmp_path / "g.jpg", _photo(50, 70, seed=8, grey=True))
    for contract, tensor in (CONTRACTS["float, one table"], CONTRACTS["grey float"], CONTRACTS["int8 quantized"]):
        pre = Preprocessor(contract, tensor)
        fast = pre(*read_image_file(path, "auto"))
        np.testing.assert_array_equal(fast, pre(_pillow_rgb(path), ColorOrder.RGB))


# ---- scores ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("kind", [OutputKind.PROBABILITIES, OutputKind.LOGITS])
def test_the_dequantization_table_gives_the_formulas_scores(dtype, kind):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    for scale, zp in ((1 / 256, info.min), (0.0371, 7), (3.3e-5, -5 if dtype == np.int8 else 250)):
        out = TensorInfo("y", (1, 300), np.dtype(dtype), scale, zp)
        y = rng.integers(info.min, info.max + 1, (1, 300)).astype(dtype)
        plain = (y.reshape(-1).astype(np.float32) - zp) * scale
        if kind == OutputKind.LOGITS:
            e = np.exp(plain - plain.max())
            plain = e / e.sum()
        np.testing.assert_array_equal(Scorer(out, kind).scores(y), plain)


def test_broken_scores_are_still_an_error():
    scorer = Scorer(TensorInfo("y", (1, 3), np.dtype(np.float32)), OutputKind.PROBABILITIES, "m.onnx")
    with pytest.raises(InputFileError, match="NaN or infinite"):
        scorer.scores(np.array([[0.1, np.nan, 0.2]], np.float32))
    for bad in (np.nan, np.inf, -np.inf):  # top() reads finiteness off its one sort: anywhere, in or out of the top k
        for at in (0, 1, 2):
            y = np.array([[0.1, 0.3, 0.2]], np.float32)
            y[0, at] = bad
            for k in (1, 3):
                with pytest.raises(InputFileError, match="NaN or infinite"):
                    scorer.top(y, k)


@pytest.mark.parametrize("n", [1, 2, 7, 1001, 2048, 2049, 5000])
def test_top_k_is_the_stable_sorts_first_k_ties_included(n):
    rng = np.random.default_rng(n)
    for s in (rng.random(n).astype(np.float32), (rng.integers(0, 4, n) / 4).astype(np.float32),
              np.zeros(n, np.float32), np.where(rng.random(n) < 0.5, -0.0, 0.0).astype(np.float32)):
        for k in (1, 3, 5, n, n + 10):
            np.testing.assert_array_equal(top_indices(s, k), np.argsort(-s, kind="stable")[:max(1, min(k, n))])


# ---- edge-predict: the same answers, and the thread count chosen by timing ----------------------------------------
def test_choose_threads_times_both_counts_and_keeps_fewer_unless_more_are_clearly_faster(rgb_onnx, monkeypatch):
    from edgekit.runtime import threads

    monkeypatch.setattr(threads, "default_threads", lambda: 2)
    choice = threads.choose_threads(rgb_onnx, budget_s=0.0)
    assert set(choice.p50_ms) == {1, 2} and choice.runs == 3
    fewer = choice.p50_ms[2] >= choice.p50_ms[1] * (1 - threads.MARGIN)
    assert choice.threads == (1 if fewer else 2)
    assert f"{choice.threads} inference thread" in choice.note() and "--threads" in choice.note()
    monkeypatch.setattr(threads, "default_threads", lambda: 1)
    assert threads.choose_threads(rgb_onnx) == threads.ThreadChoice(1)


def test_over_a_folder_the_choice_counts_decoding_and_a_decoder_needs_a_core_of_its_own(rgb_onnx, monkeypatch,
                                                                                       tmp_path):
    from edgekit.runtime import threads
    from tests.conftest import write_png

    monkeypatch.setattr(threads, "default_threads", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert threads.decodes_ahead(1) and not threads.decodes_ahead(2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert threads.decodes_ahead(2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    # a decoder with a core of its own costs the slower of the two; sharing every core, half the shorter on top
    assert threads.per_file_ms(7.54, 2.09, 1) == 7.54 and threads.per_file_ms(1.0, 3.0, 1) == 3.0
    assert threads.per_file_ms(4.96, 2.08, 2) == pytest.approx(6.0)  # MobileNetV2 here: 2 threads are worth it
    assert threads.per_file_ms(7.54, 2.09, 1) * (1 - threads.MARGIN) > threads.per_file_ms(4.96, 2.08, 2)
    # decoding far slower than the model: one thread with the decoder beside it beats two threads sharing the cores
    slow = threads.choose_threads(rgb_onnx, budget_s=0.0, decode_ms=1000.0)
    assert slow.threads == 1 and slow.decode_ms == 1000.0 and "decoding a file 1000.00 ms" in slow.note()
    # free decoding: the plain rule (more threads only when clearly faster)
    free = threads.choose_threads(rgb_onnx, budget_s=0.0, decode_ms=0.0)
    assert free.threads == (2 if free.p50_ms[2] < free.p50_ms[1] * (1 - threads.MARGIN) else 1)
    files = [write_png(tmp_path / f"{i}.png", (10 * i, 0, 0)) for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"no")
    assert threads.decode_time_ms([bad, *files], "auto") > 0  # the unreadable file is left to the run
    assert threads.decode_time_ms([bad], "auto") is None


def test_edge_predict_over_a_folder_answers_as_on_pillows_pixels_and_says_how_many_threads(rgb_onnx, tmp_path,
                                                                                          capsys):
    import json

    from edgekit.cli.predict import PROBE_FROM_IMAGES, main
    from edgekit.runtime import Classifier

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(PROBE_FROM_IMAGES):
        img = _photo(20 + i % 7, 30, seed=i)
        img[..., i % 3] = 255  # each photo leans to one colour
        _save(folder / f"{i:02d}.{'png' if i % 4 == 0 else 'jpg'}", img, "PNG" if i % 4 == 0 else "JPEG")
    assert main([str(rgb_onnx), str(folder), "--json", "--top-k", "3"]) == 0
    out, err = capsys.readouterr()
    assert "inference thread" in err and "chosen by timing" in err
    got = [json.loads(line) for line in out.splitlines()]
    clf = Classifier.open(rgb_onnx)
    expected = [{"image": str(p), "predictions": [{"label": x.label, "index": x.index, "score": round(x.score, 6)}
                                                  for x in clf.classify(_pillow_rgb(p), color_order="RGB", top_k=3)]}
                for p in sorted(folder.iterdir())]
    assert got == expected
    assert main([str(rgb_onnx), str(folder), "--json", "--threads", "1"]) == 0
    assert "inference thread" not in capsys.readouterr().err  # the user's count, not timed


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.float32])
@pytest.mark.parametrize("kind", [OutputKind.PROBABILITIES, OutputKind.LOGITS])
@pytest.mark.parametrize("n", [1, 2, 1001, 2049])
def test_the_top_k_of_raw_outputs_is_that_of_the_scores(dtype, kind, n):
    rng = np.random.default_rng(1)
    quantized = dtype != np.float32
    out = TensorInfo("y", (1, n), np.dtype(dtype), 1 / 256 if quantized else 0.0, -3 if quantized else 0)
    scorer = Scorer(out, kind)
    for y in (rng.integers(-128 if dtype == np.int8 else 0, 128, (1, n)),  # many ties
              rng.integers(-3 if dtype == np.int8 else 0, 3, (1, n)), np.zeros((1, n)),
              rng.random((1, n)), np.where(rng.random((1, n)) < 0.5, -0.0, 0.0)):
        y = y.astype(dtype)
        s = scorer.scores(y)
        for k in (1, 3, 5, n - 1, n, 3000):
            idx = top_indices(s, k)
            assert scorer.top(y, k) == (idx.tolist(), s[idx].tolist()), (k, y[0, :8])
