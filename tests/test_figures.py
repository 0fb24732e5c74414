"""core/figures.py: figures on their own Agg canvas, saved atomically."""
import matplotlib
import pytest

from harness.core import figures


def test_a_figure_is_saved_as_png_without_touching_the_global_backend(tmp_path):
    backend = matplotlib.get_backend()
    fig = figures.figure(3, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    path = figures.save(fig, tmp_path / "deep" / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]  # no temporary file left behind


def test_a_failed_save_leaves_the_previous_picture_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "curve.png"
    path.write_bytes(b"old picture")
    fig = figures.figure(3, 2)

    def broken(target, format):
        with open(target, "wb") as fh:
            fh.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        figures.save(fig, path)
    assert path.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
