"""Hostile inputs fail their own row, quickly, and never hang a worker or fill its memory.

- CSV/JSONL: an undecodable byte or an overlong line fails that row (line number, byte offset);
  ``encoding:`` reads other encodings.
- Images: regular files only (a FIFO or device is refused without being opened for reading),
  a byte limit, downloads with a total deadline, a size limit and a redirect limit;
  ``images_root:`` confines every path.
- A failure that is the input's fault is a sample failure returned by ``load``, never an
  exception (which the runner would retry as a transient batch error, failing the good rows too).
- Specs: YAML aliases cannot blow up; ``${env:X:-default}`` with a ``}`` in the default is an error.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecap.errors import SpecError
from ecap.images import ImageReadError, read_bytes
from ecap.interfaces import PluginContext
from ecap.records import Item, SampleError
from ecap.testing import make_pairs
from ecap_csv.source import CsvSource


def source(path: Path, **config: object) -> CsvSource:
    return CsvSource(
        CsvSource.Config.model_validate({"path": str(path), **config}),
        PluginContext(step_id="pairs", base_dir=path.parent, work_dir=path.parent),
    )


def imported(path: Path, **config: object) -> list[list[Item] | SampleError]:
    plugin = source(path, **config)
    return plugin.load(list(plugin.rows()))


def failures(results: list[list[Item] | SampleError]) -> list[str]:
    return [r.message for r in results if isinstance(r, SampleError)]


# -- text files -----------------------------------------------------------------------------------


def test_an_undecodable_byte_fails_only_its_csv_row_with_line_and_byte_offset(tmp_path):
    csv_file = make_pairs(tmp_path, 4)
    lines = csv_file.read_bytes().split(b"\n")
    offset = len(b"\n".join(lines[:3])) + 1 + lines[3].index(b"Make")
    lines[3] = lines[3].replace(b"Make", b"M\xffke")  # the third pair's row, line 4
    csv_file.write_bytes(b"\n".join(lines))

    results = imported(csv_file)

    assert len(results) == 4
    (message,) = failures(results)
    assert message.startswith("pairs.csv:4: ")
    assert f"byte offset {offset + 1}" in message and "0xff" in message
    assert sum(isinstance(r, list) for r in results) == 3


def test_an_undecodable_byte_fails_only_its_jsonl_line(tmp_path):
    make_pairs(tmp_path, 2)
    good = '{"source": "images/0-source.png", "target": "images/0-target.png"}\n'
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_bytes(good.encode() + b'{"source": "\xc3\x28"}\n' + good.encode())

    results = imported(jsonl)

    (message,) = failures(results)
    assert message.startswith(f"pairs.jsonl:2: byte offset {len(good) + 12}: byte 0xc3")
    assert [isinstance(r, list) for r in results] == [True, False, True]


def test_the_encoding_option_reads_other_encodings(tmp_path):
    csv_file = make_pairs(tmp_path, 2)
    text = csv_file.read_text().replace("Make pair 0 bluer.", "Rends la paire 0 plus bleue é.")
    csv_file.write_bytes(text.encode("latin-1"))

    assert failures(imported(csv_file)) != []  # é in latin-1 is not UTF-8
    results = imported(csv_file, encoding="latin-1")
    assert failures(results) == []
    assert results[0][0].instruction.text == "Rends la paire 0 plus bleue é."


def test_a_byte_order_mark_opens_the_file_only(tmp_path):
    csv_file = make_pairs(tmp_path, 2)
    text = csv_file.read_text().replace("Make pair 1 bluer.", "\ufeffMake pair 1 bluer.")
    csv_file.write_bytes(b"\xef\xbb\xbf" + text.encode())

    results = imported(csv_file)

    assert failures(results) == []  # the mark is not read into the header's first name
    texts = [r[0].instruction.text for r in results]
    assert texts == ["Make pair 0 bluer.", "\ufeffMake pair 1 bluer."]  # data keeps its U+FEFF


def test_blank_lines_are_no_records_and_short_ones_lack_their_last_fields(tmp_path):
    csv_file = make_pairs(tmp_path, 3)
    header, first, second, third = csv_file.read_text().splitlines()
    short = ",".join(third.split(",")[:2])  # source and target only
    csv_file.write_text("\n".join([header, "", first, "", "", second, short]) + "\n")

    results = imported(csv_file)

    assert failures(results) == []
    assert [r[0].pair.meta["row"] for r in results] == [3, 6, 7]  # each record's own line
    assert results[2][0].instruction is None and results[2][0].pair.category is None


@pytest.mark.parametrize("encoding", ["utf-16", "no-such-codec"])
def test_an_encoding_that_changes_ascii_or_does_not_exist_is_a_config_error(tmp_path, encoding):
    with pytest.raises(ValueError, match="encoding"):
        source(tmp_path / "pairs.csv", encoding=encoding)


def test_an_overlong_line_fails_its_row_without_being_held(tmp_path):
    make_pairs(tmp_path, 1)
    good = '{"source": "images/0-source.png", "target": "images/0-target.png"}\n'
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(good + '{"x": "' + "a" * 5000 + '"}\n' + good)

    results = imported(jsonl, max_row_bytes=1000)

    assert failures(results) == ["pairs.jsonl:2: line longer than max_row_bytes=1000"]
    assert len(results) == 3


def test_a_fifo_as_the_csv_file_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pairs.csv"
    os.mkfifo(fifo)
    with pytest.raises(Exception, match="not a regular file"):
        list(source(fifo).rows())


# -- images ----------------------------------------------------------------------------------------


def csv_with_targets(tmp_path: Path, targets: list[str], **kwargs: object) -> Path:
    """A CSV whose rows pair a good source image with each of ``targets``."""
    csv_file = make_pairs(tmp_path, 1)
    lines = ["source,target"] + [f"images/0-source.png,{t}" for t in targets]
    csv_file.write_text("\n".join(lines) + "\n")
    return csv_file


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "folder"])
def test_an_image_that_is_not_a_regular_file_fails_at_once(tmp_path, special):
    csv_file = csv_with_targets(tmp_path, ["images/0-target.png", "special"])
    target = tmp_path / "special"
    if special == "fifo":
        os.mkfifo(target)  # opening it for reading would wait for a writer forever
    elif special == "folder":
        target.mkdir()
    else:
        target.symlink_to(special)  # reading it would never end

    started = time.monotonic()
    results = imported(csv_file)

    assert time.monotonic() - started < 5
    (message,) = failures(results)
    assert "not a regular file" in message
    assert isinstance(results[0], list)


def test_an_image_over_the_byte_limit_fails_its_row(tmp_path):
    csv_file = csv_with_targets(tmp_path, ["images/0-target.png"])
    size = (tmp_path / "images" / "0-target.png").stat().st_size
    (message,) = failures(imported(csv_file, max_image_bytes=size - 1))
    assert "over the" in message and "limit" in message
    assert failures(imported(csv_file, max_image_bytes=size)) == []


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server with a good image, a trickle, an endless body and a redirect loop."""
    png = (make_pairs(tmp_path / "served", 1).parent / "images" / "0-target.png").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/good.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
            elif self.path == "/trickle.png":  # each read gets a byte well within any timeout
                self.send_response(200)
                self.end_headers()
                try:
                    for byte in png:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:  # the client gave up, as it should
                    pass
            elif self.path == "/endless.png":
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(10_000):
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass
            elif self.path == "/loop.png":
                self.send_response(302)
                self.send_header("Location", "/loop.png")
                self.end_headers()

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_download_has_a_total_deadline_not_a_per_read_timeout(image_server):
    started = time.monotonic()
    with pytest.raises(ImageReadError, match="took longer than 1 s"):
        read_bytes(f"{image_server}/trickle.png", 1.0)
    assert time.monotonic() - started < 2.5


def test_a_download_over_the_size_limit_stops(image_server):
    with pytest.raises(ImageReadError, match="over the 1000000 byte limit"):
        read_bytes(f"{image_server}/endless.png", 10.0, max_bytes=1_000_000)


def test_a_download_follows_a_bounded_number_of_redirects(image_server):
    with pytest.raises(ImageReadError, match="redirect"):
        read_bytes(f"{image_server}/loop.png", 10.0, max_redirects=3)
    assert read_bytes(f"{image_server}/good.png", 10.0).startswith(b"\x89PNG")


def test_a_slow_image_url_fails_its_row_only(tmp_path, image_server):
    csv_file = csv_with_targets(tmp_path, ["images/0-target.png", f"{image_server}/trickle.png"])
    started = time.monotonic()
    results = imported(csv_file, url_timeout=0.5)
    assert time.monotonic() - started < 3
    (message,) = failures(results)
    assert "took longer than 0.5 s" in message
    assert isinstance(results[0], list)


def test_images_root_confines_every_path(tmp_path):
    outside = tmp_path / "outside.png"
    make_pairs(tmp_path, 1)
    (tmp_path / "images" / "0-target.png").rename(outside)
    root = tmp_path / "images"
    (root / "inside-link.png").symlink_to(root / "0-source.png")
    (root / "escape.png").symlink_to(outside)
    csv_file = csv_with_targets(
        tmp_path,
        [
            "inside-link.png",
            "../outside.png",
            str(outside),
            f"file://{outside}",
            "escape.png",
        ],
    )
    csv_file.write_text(csv_file.read_text().replace("images/0-source.png", "0-source.png"))

    results = imported(csv_file, images_root="images")

    assert isinstance(results[0], list)
    assert [m.split(": ", 1)[1] for m in failures(results)] == [
        "../outside.png: '..' is refused with images_root set",
        f"{outside}: an absolute path, refused with images_root set",
        f"file://{outside}: an absolute path, refused with images_root set",
        f"escape.png: a link that leads out of images_root {root}",
    ]


def test_a_decoder_raising_anything_fails_only_that_row(tmp_path, monkeypatch):
    """Hostile bytes can make an image decoder raise any exception, not just OSError; it is the
    file's fault, so a sample failure, never an exception the runner would retry."""
    from PIL import Image

    csv_file = make_pairs(tmp_path, 3)
    real_open = Image.open
    bad = (tmp_path / "images" / "1-target.png").read_bytes()

    def open_image(fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        if hasattr(fp, "getvalue") and fp.getvalue() == bad:
            raise ZeroDivisionError("a decoder bug met a hostile file")
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_image)
    results = imported(csv_file)

    (message,) = failures(results)
    assert "a decoder bug met a hostile file" in message
    assert [isinstance(r, list) for r in results] == [True, False, True]


def test_prepare_image_turns_any_decoder_failure_into_an_image_read_error(tmp_path, monkeypatch):
    import hashlib

    from PIL import Image

    from ecap.images import prepare_image
    from ecap.records import ImageRef

    make_pairs(tmp_path, 1)
    path = tmp_path / "images" / "0-source.png"
    ref = ImageRef(uri=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    def broken(*args: object, **kwargs: object) -> None:
        raise IndexError("hostile bytes")

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(ImageReadError, match="not a readable image"):
        prepare_image(ref)


# -- specs ----------------------------------------------------------------------------------------


def test_nested_yaml_aliases_cannot_explode(tmp_path):
    from ecap.spec import parse_spec
    from ecap.testing import registry_with_fakes

    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    text = "\n".join(levels) + "\nsteps: {p: {source: csv, with: {path: x.csv}}}\n"
    assert len(text) < 1000  # a billion leaves, if expanded

    started = time.monotonic()
    with pytest.raises(SpecError, match="alias"):
        parse_spec(text, tmp_path / "spec.yaml", registry_with_fakes())
    assert time.monotonic() - started < 1


def test_an_env_default_with_a_closing_brace_is_an_error(tmp_path, monkeypatch):
    from ecap.spec import parse_spec
    from ecap.testing import registry_with_fakes

    monkeypatch.delenv("ECAP_TEST_UNSET", raising=False)
    text = "steps: {p: {source: csv, with: {path: '${env:ECAP_TEST_UNSET:-a}b}.csv'}}}\n"
    with pytest.raises(SpecError, match=r"'}'"):
        parse_spec(text, tmp_path / "spec.yaml", registry_with_fakes())
