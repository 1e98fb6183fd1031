"""
core/images.py: the one image pipeline. Any PIL image -> the (img_height, W) uint8 array the model sees:
gray, transparency as white paper, resized to the model's height with the aspect ratio kept. Training
(data.OMRDataset) and inference (sample.py, pages.py, staves.py) share it, so they can never drift
apart. Plus the light, label-preserving augmentation of training images.
"""

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_gray(im):
    """PIL image of any mode -> mode "L", with transparent areas turned into white paper (not black),
    and white ink on a dark background (some scanners, screenshots of dark themes) turned into dark
    ink on white paper (see paper_up)."""
    if im.mode != "L":
        if im.mode in ("LA", "RGBA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            paper = Image.new("RGBA", im.size, (255, 255, 255, 255))
            paper.alpha_composite(im)
            im = paper
        im = im.convert("L")
    return paper_up(im)


def paper_up(im):
    """An "L" image whose background is dark and whose minority is bright (white ink on black) ->
    inverted; any other image is returned as it is. Music is sparse ink on paper: the median pixel is
    the paper. It must be dark (< 96) and the brightest 1% well above it (>= 64 levels: there is light
    ink), so a uniformly dark or noisy image is left alone. Idempotent: an inverted page has light paper.
    Training images (white paper) are never touched."""
    if im.size[0] < 1 or im.size[1] < 1:
        return im
    a = np.asarray(im)
    step = max(1, int(math.sqrt(a.size / 20_000)))  # ~20k pixels on a grid are plenty for two percentiles
    med, hi = np.percentile(a[::step, ::step], [50, 99])
    if med < 96 and hi - med >= 64:
        return im.point(lambda v: 255 - v)
    return im


def resize_to_height(im, img_height, max_width):
    """Scale a grayscale PIL image to height `img_height`, keeping its aspect ratio.

    Over-wide images (width after scaling > max_width) are scaled down *uniformly* until they are
    max_width wide and then centred vertically on a white img_height-high canvas. We never crop (the
    label would then describe music that is not in the image) and never squeeze only the width (that
    distorts note heads and spacing, which the model reads). The cost is a smaller staff for the rare
    very long system, and the taller img_height, the more systems pay it, so OMRDataset prints the
    fraction; raise max_width with img_height if your GPU allows it.
    Returns an (img_height, W) PIL image, W <= max_width."""
    w, h = im.size
    W = max(1, round(w * img_height / h))
    # Shrinking: BOX averages exactly the source pixels under each output pixel (ideal antialiasing for
    # these 1-3x reductions: thin staff lines turn light gray instead of vanishing) and is cheaper than
    # BILINEAR or LANCZOS. Enlarging: BOX would be blocky nearest-neighbour, so BILINEAR.
    if W <= max_width:
        return im.resize((W, img_height), Image.Resampling.BOX if h > img_height else Image.Resampling.BILINEAR)
    h2 = max(1, round(h * max_width / w))
    small = im.resize((max_width, h2), Image.Resampling.BOX if h > h2 else Image.Resampling.BILINEAR)
    canvas = Image.new("L", (max_width, img_height), 255)
    canvas.paste(small, (0, (img_height - h2) // 2))
    return canvas


def preprocess(im, img_height, max_width):
    """Any PIL image -> the (img_height, W) uint8 array the model sees: gray (transparency as white
    paper), resized to the height with the aspect kept."""
    im = to_gray(im)
    if im.size[0] < 1 or im.size[1] < 1:
        raise ValueError(f"empty image {im.size}")
    return np.array(resize_to_height(im, img_height, max_width), dtype=np.uint8)  # writable copy


def augment_image(x, g, shape=False, max_width=None):
    """Light, label-preserving augmentation of a (1, H, W) float image in [0, 1] (ink dark, paper 1.0).

    Written in torch so it runs in DataLoader workers without extra deps. `g` is a torch.Generator:
    the same (seed, epoch, index) always gives the same image, whatever the number of workers.
    Each effect fires with probability 1/2; magnitudes stay small because a note moved by a staff
    position changes its pitch, i.e. the label:
      - rotation by at most +-0.5 degrees (scanned pages are rarely straighter than that);
      - contrast: ink darkness scaled by 0.6-1.0 (faint print);
      - Gaussian blur, sigma 0.3-1.0 px (soft focus, low-res scans);
      - additive Gaussian noise, sigma up to 0.04 (sensor noise).
    We work on ink = 1 - x so that zero padding (grid_sample, conv) means white paper.
    shape=True first changes the glyphs themselves (shape_augment), for engravers never trained on."""
    u = lambda: torch.rand((), generator=g).item()
    ink = (1.0 - x).unsqueeze(0)  # (1, 1, H, W)
    if shape:
        ink = shape_augment(ink, g, max_width)
    _, _, H, W = ink.shape
    if u() < 0.5:
        a = math.radians((2 * u() - 1) * 0.5)
        # affine_grid works in [-1, 1] coordinates on both axes; scale the off-diagonal terms by the
        # aspect ratio so the rotation is a true rotation in pixel space and not a shear.
        theta = torch.tensor([[math.cos(a), -math.sin(a) * H / W, 0.0],
                              [math.sin(a) * W / H, math.cos(a), 0.0]]).unsqueeze(0)
        grid = F.affine_grid(theta, ink.shape, align_corners=False)
        ink = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if u() < 0.5:
        ink = ink * (0.6 + 0.4 * u())
    if u() < 0.5:
        sigma = 0.3 + 0.7 * u()
        r = max(1, math.ceil(2 * sigma))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
        k = k / k.sum()
        # separable blur: a (1, 1, 1, K) kernel along W, then a (1, 1, K, 1) kernel along H
        ink = F.conv2d(ink, k.view(1, 1, 1, -1), padding=(0, r))
        ink = F.conv2d(ink, k.view(1, 1, -1, 1), padding=(r, 0))
    if u() < 0.5:
        ink = ink + torch.randn(ink.shape, generator=g) * (0.04 * u())
    return (1.0 - ink.squeeze(0)).clamp_(0.0, 1.0)  # (1, H, W)


def shape_augment(ink, g, max_width=None):
    """Change what the glyphs look like, not what they mean: a (1, 1, H, W) ink image (paper 0) -> the
    same music as another engraver might draw it. A model that has seen four fonts otherwise learns
    their exact note heads, clefs and stem weights, and reads a fifth font at 2.5x the error (the
    held-out-font run in reader/README.md). Each effect fires with probability 1/2:
      - stroke weight, separately across and along the staff: ink blended with a 1x3 (thicker stems and
        bar lines) or 3x1 (thicker staff lines and beams) grey dilation (up to 70%) or erosion (up to 50%);
      - an elastic warp (Simard et al. 2003): a smooth random displacement, coarse noise on an
        ~8-px grid upsampled bicubically, at most ~1.5 px across and ~0.6 px up or down; a pitch step
        is half a staff space, ~4 px at 64 px high, so no note changes its line or space;
      - width: the whole line stretched or squeezed by up to 10% (fonts differ in glyph widths and
        spacing); the height, and so every staff position, is kept."""
    u = lambda: torch.rand((), generator=g).item()
    _, _, H, W = ink.shape
    for k in ((1, 3), (3, 1)):  # (kh, kw) of the structuring element
        if u() < 0.5:
            t = 1.2 * u() - 0.5  # > 0 bolder (up to 70%), < 0 thinner (up to 50%: faint lines must survive)
            pad = (k[1] // 2, k[1] // 2, k[0] // 2, k[0] // 2)
            if t > 0:
                other = F.max_pool2d(F.pad(ink, pad), k, stride=1)  # grey dilation
            else:
                other = -F.max_pool2d(F.pad(-ink, pad, value=-1.0), k, stride=1)  # grey erosion
            ink = ink + abs(t) * (other - ink)
    if u() < 0.5:
        gh, gw = max(2, H // 8), max(2, W // 8)
        noise = torch.rand(1, 2, gh, gw, generator=g) * 2 - 1  # (1, 2, gh, gw) in [-1, 1]
        disp = F.interpolate(noise, size=(H, W), mode="bicubic", align_corners=True)  # (1, 2, H, W) smooth
        amp = u()
        # pixels -> grid_sample's [-1, 1] units: 1 px is 2/W across and 2/H down
        dx = disp[:, 0] * (1.5 * amp * 2 / W)
        dy = disp[:, 1] * (0.6 * amp * 2 / H)
        # the identity sampling grid (1, H, W, 2) in (x, y) order, plus the displacement
        grid = F.affine_grid(torch.eye(2, 3).unsqueeze(0), ink.shape, align_corners=False)
        grid = grid + torch.stack((dx, dy), dim=-1)
        ink = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if u() < 0.5:
        W2 = max(8, round(W * (0.9 + 0.2 * u())))
        if max_width:
            W2 = min(W2, max_width)  # never past the model's max_width
        ink = F.interpolate(ink, size=(H, W2), mode="bilinear", align_corners=False, antialias=W2 < W)
    return ink.clamp_(0.0, 1.0)


def header_sizes(ds):
    """(width, height) of every image of a datasets.Dataset whose image column is undecoded
    (Image(decode=False)), read from the PNG headers: no image is decoded. A PNG's IHDR chunk comes
    first, width and height big-endian u32 at bytes 16 and 20; another format gets PIL's lazy header
    read; an unreadable image (0, 0), so that the error naming its index comes when it is loaded."""
    import pyarrow.compute as pc
    sizes = []
    for batch in ds.with_format("arrow").iter(batch_size=4096):
        for col in batch.column("image").chunks:  # per chunk: .field() is zero-copy, no image is read
            heads = pc.binary_slice(col.field("bytes"), 0, 24).to_pylist()
            for j, head in enumerate(heads):
                if head is not None and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                    sizes.append((int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")))
                else:
                    rec = col[j].as_py()
                    try:
                        with Image.open(io.BytesIO(rec["bytes"]) if rec["bytes"] else rec["path"]) as im:
                            sizes.append(im.size)
                    except Exception:
                        sizes.append((0, 0))
    return sizes
