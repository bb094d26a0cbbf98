"""The tray's icons, drawn in code (no image files to ship): a disc whose colour and mark
say the kind. The colours are named here so the e2e test can find the icon on screen."""

from __future__ import annotations

from PIL import Image, ImageDraw

from pyd.tray.model import IconKind

SIZE = 64  # pixels; each backend scales it to the tray's slot
COLOURS: dict[IconKind, tuple[int, int, int]] = {
    IconKind.RUNNING: (46, 160, 67),  # green
    IconKind.STARTING: (219, 171, 9),  # amber
    IconKind.STOPPED: (110, 118, 129),  # grey
    IconKind.ERROR: (207, 34, 46),  # red
}
_MARK = (255, 255, 255, 255)


def draw_icon(kind: IconKind) -> Image.Image:
    """A `kind`-coloured disc; starting has a hollow centre (a ring), error an exclamation
    mark, stopped a pause-like bar pair, so the kind reads without colour too."""
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    rgba = (*COLOURS[kind], 255)
    draw.ellipse((2, 2, SIZE - 3, SIZE - 3), fill=rgba)
    mid = SIZE // 2
    if kind is IconKind.STARTING:
        draw.ellipse((mid - 12, mid - 12, mid + 11, mid + 11), fill=_MARK)
    elif kind is IconKind.ERROR:
        draw.rectangle((mid - 4, 14, mid + 3, 38), fill=_MARK)
        draw.rectangle((mid - 4, 44, mid + 3, 51), fill=_MARK)
    elif kind is IconKind.STOPPED:
        draw.rectangle((mid - 12, 18, mid - 5, SIZE - 19), fill=_MARK)
        draw.rectangle((mid + 4, 18, mid + 11, SIZE - 19), fill=_MARK)
    return image
