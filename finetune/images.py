"""Post images: resolved under an optional image root; a missing or unreadable file becomes the default image
and is counted, per split, so every report can say how many posts were seen without their picture."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_IMAGE_SIZE = 224
STAND_IN = "\x00stand-in"  # the default picture's key in a name -> tensor map (never a file name)


def default_image(size: int = DEFAULT_IMAGE_SIZE) -> Image.Image:
    """The stand-in for a missing picture: a uniform mid-grey square (zero after the usual normalisations)."""
    return Image.new("RGB", (size, size), (128, 128, 128))


class ImageStore:
    """Opens post images by file name under `root` (None: every image is missing) and counts the outcome of each
    distinct name once, however often it is opened (the context source and the trainer both open a split's images)."""

    def __init__(self, root: str | Path | None, keep: bool = False, decode_size: int = 0):
        """keep: hold each decoded picture for the store's lifetime, so a second open (the context source, then
        the model) does not decode it again — for a store that lives for one predict call, not a whole split.
        decode_size: the largest square side any reader of the store resizes pictures to (0: decode at full
        size). A JPEG is then decoded at the smallest 1/2, 1/4 or 1/8 scale still at least that large on both
        sides (libjpeg's DCT scaling, PIL's `draft`), so a phone photo is not decoded at 12 MP to become a
        224 px input: 1600 x 1200 decode + both resizes 34.5 -> 12.5 ms (BENCHMARKS.md, "Prediction")."""
        self.root = Path(root) if root else None
        self.decode_size = decode_size
        self.counts: Counter = Counter()  # "ok" | "missing" | "unreadable"
        self.seen: set[str] = set()
        self.kept: dict[str, tuple[Image.Image, str]] | None = {} if keep else None

    def path(self, name: str) -> Path | None:
        return self.root / name if self.root and name else None

    def open(self, name: str) -> tuple[Image.Image, str]:
        if self.kept is not None and name in self.kept:
            return self.kept[name]
        path = self.path(name)
        if path is None or not path.is_file():
            status, img = "missing", default_image()
        else:
            try:
                with Image.open(path) as im:
                    if self.decode_size:  # a no-op for anything but a JPEG
                        im.draft("RGB", (self.decode_size, self.decode_size))
                    img = im.convert("RGB")
                status = "ok"
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                status, img = "unreadable", default_image()  # a decompression bomb too: counted, never decoded
        if name not in self.seen:
            self.seen.add(name)
            self.counts[status] += 1
        if self.kept is not None:
            self.kept[name] = (img, status)
        return img, status

    def report(self) -> dict[str, int]:
        return {k: self.counts.get(k, 0) for k in ("ok", "missing", "unreadable")}


def resolve_image_root(data_dir: Path, images: str | Path | None) -> Path | None:
    """`--images DIR` if given, else `<data>/images` if it exists, else None (all images missing)."""
    if images:
        return Path(images)
    return data_dir / "images" if (data_dir / "images").is_dir() else None


def jpeg_data_url(img: Image.Image, size: int) -> str:
    """The picture as a JPEG thumbnail (at most size x size) in a data: URL, for a self-contained HTML page."""
    import base64
    import io

    img = img.convert("RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
