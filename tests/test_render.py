from pathlib import Path

from fmnist.reporting.render import Bullets, Heading, Image, Table, Text, to_html, to_markdown

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c"
                    "63000100000500010d0a2db40000000049454e44ae426082")


def blocks(tmp_path: Path):
    image = tmp_path / "figures" / "a.png"
    image.parent.mkdir()
    image.write_bytes(PNG)
    return [Heading("Results"), Text("see `code` and **bold** <script>"), Bullets(["one"]),
            Table([{"a": 0.5, "b": "x<y"}], ["a", "b"], ["A", "B"]), Image("a plot", image)]


def test_markdown_links_images_relative_to_the_file(tmp_path):
    text = to_markdown(blocks(tmp_path), tmp_path)
    assert "## Results" in text and "| 0.5000 | x<y |" in text and "![a plot](figures/a.png)" in text


def test_html_is_self_contained_and_escaped(tmp_path):
    page = to_html(blocks(tmp_path), "Title & more")
    assert "<title>Title &amp; more</title>" in page
    assert "data:image/png;base64," in page and "figures/a.png" not in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert "<td>x&lt;y</td>" in page
