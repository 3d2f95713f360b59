"""A picture of one digit -> the 28x28 image MNIST would have made of it.

MNIST's digits are white ink on black, their bounding box fitted to 20x20
keeping the aspect ratio (antialiased), pasted into a 28x28 field with the
centre of mass at the centre. A clean scan needs only that. A photo of paper
needs more first (`ink_of`):

1. the background is normalised: the paper's brightness, estimated by a
   grey closing (which removes thin dark strokes) and a blur, divides the
   picture, so a dark side of the page is paper, not ink (a dark board: its
   opening is subtracted, chalk being the light part);
2. the ink is what stands out from the normalised paper (Otsu's threshold
   over the picture, after a median filter against specks);
3. page-wide lines and borders (runs of ink across most of the picture, as on
   ruled or squared paper) are dropped;
4. the digit is the dominant ink component near the centre, with the
   components close to it (a broken stroke, the bar of a 5); specks and
   other marks elsewhere are dropped.

`Digit.problem` says when there is no single digit to classify: a blank
picture, one whose "ink" covers most of it, or one with another mark as large
as a digit (two digits side by side).
"""

import dataclasses

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

IMAGE_SHAPE = (28, 28)
BOX_SIZE = 20  # MNIST's digits fit a 20x20 box inside the 28x28 field.
WORK_SIZE = 320  # Larger pictures are reduced to this longer side first.
MIN_CONTRAST = 0.08  # Less between paper and ink (of 1) is a blank picture.
MAX_INK = 0.4  # More of the picture as ink is not a digit on a page.
MAX_DARK_PART = 0.5  # Nor is a picture mostly as dark as ink (for dark ink).
INK_TONE = 0.3  # Ink is darker than this fraction of the paper's tone.
MAX_KEPT_BOX = 0.85  # A kept digit whose box covers more of the picture than this.
LINE_FRACTION = 0.7  # Ink runs across this much of the picture are page lines.
ZOOM_BELOW = 0.3  # A digit smaller than this part of the picture is looked at again.
MIN_DIGIT_PIXELS = 12  # Fewer kept pixels (at the working size) are specks.
OTHER_MARK = 0.3  # A mark left out this large, of the digit's ink: another digit?
SHADOW_EDGE = 0.08  # A paper tone changing by this part a pixel is an edge.
STROKE = 0.12  # MNIST's strokes: about 2.5 pixels of the 20-pixel box.


@dataclasses.dataclass
class Digit:
  """What preprocessing made of a picture.

  Attributes:
    image: `(28, 28)` float32 in [0, 1], white digit on black (all zeros
      when `problem` is 'blank').
    problem: `None`, or why there is no single digit to classify: 'blank'
      (no ink), 'mostly ink' (ink covers most of the picture) or 'several
      marks' (a mark as large as a digit, such as another digit, was left
      out; the one near the centre was read).
    detail: one line for the user about `problem`.
  """

  image: np.ndarray
  problem: str | None = None
  detail: str = ''


def grayscale(image: Image.Image) -> np.ndarray:
  """`(rows, cols)` float64 in [0, 1]; transparency becomes the paper's colour."""
  image = ImageOps.exif_transpose(image)  # photos taken sideways
  if 'A' in image.getbands() or 'transparency' in image.info:
    rgba = image.convert('RGBA')
    alpha = np.asarray(rgba.getchannel('A'), np.float64) / 255
    gray = np.asarray(rgba.convert('L'), np.float64) / 255
    opaque = alpha > 0.5
    # Dark ink on a transparent canvas goes onto white paper, light ink onto black.
    paper = 1.0 if not opaque.any() or gray[opaque].mean() < 0.5 else 0.0
    return gray * alpha + paper * (1 - alpha)
  if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
    gray = np.asarray(image, np.float64)
    low, high = gray.min(), gray.max()
    return (gray - low) / (high - low) if high > low else np.zeros_like(gray)
  return np.asarray(image.convert('L'), np.float64) / 255


def _reduce(gray: np.ndarray) -> np.ndarray:
  scale = WORK_SIZE / max(gray.shape)
  if scale >= 1:
    return gray
  size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
  image = Image.fromarray(gray.astype(np.float32)).resize(size, Image.Resampling.BOX)
  return np.asarray(image, np.float64)


def _dark_ink(gray: np.ndarray) -> bool:
  """Whether the ink is darker than the paper.

  The picture's edge is mostly paper: if its median tone is close to the
  brightest (or darkest) tone, the ink is dark (or light). Otherwise (a
  shadow or uneven light over the edge) the thin dark structures (a black
  top-hat) and the thin light ones (a white top-hat) are weighed: strokes
  are thin, a lighting gradient or a shadow's edge is neither.
  """
  smooth = ndimage.median_filter(gray, size=3)
  edge = max(1, min(gray.shape) // 50)
  border = np.concatenate(
    [
      smooth[:edge].ravel(),
      smooth[-edge:].ravel(),
      smooth[:, :edge].ravel(),
      smooth[:, -edge:].ravel(),
    ]
  )
  low, high, paper = float(smooth.min()), float(smooth.max()), float(np.median(border))
  if high - paper < 0.15 * (high - low):
    return True
  if paper - low < 0.15 * (high - low):
    return False
  size = max(3, max(gray.shape) // 20)
  dark = float(np.sum(ndimage.black_tophat(smooth, size=size, mode='nearest') ** 2))
  light = float(np.sum(ndimage.white_tophat(smooth, size=size, mode='nearest') ** 2))
  return dark > light


def _covered(gray: np.ndarray, dark: bool) -> float:
  """The part of the picture on the ink's side of a global threshold, if the
  two sides differ as ink and paper do (not as light and shadow); else 0."""
  threshold = _otsu(gray)
  ink = gray < threshold if dark else gray > threshold
  if not ink.any() or ink.all():
    return 0.0
  tone, paper = gray[ink].mean(), gray[~ink].mean()
  ratio = tone / max(paper, 1e-3) if dark else (1 - tone) / max(1 - paper, 1e-3)
  return float(ink.mean()) if ratio < INK_TONE else 0.0


def _stroke_width(digit: np.ndarray) -> float:
  """The mean width of the strokes of `digit` (a mask): area over half the outline."""
  edge = digit & ~ndimage.binary_erosion(digit)
  return 2 * float(digit.sum()) / max(float(edge.sum()), 1.0)


def _otsu(values: np.ndarray) -> float:
  """The threshold that best splits `values` into two classes (Otsu)."""
  counts, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
  centres = (edges[:-1] + edges[1:]) / 2
  weight = np.cumsum(counts)
  mean = np.cumsum(counts * centres)
  total, total_mean = weight[-1], mean[-1]
  with np.errstate(divide='ignore', invalid='ignore'):
    between = (total_mean * weight - mean * total) ** 2 / (weight * (total - weight))
  return float(centres[np.nanargmax(between)])


def _runs(mask: np.ndarray, length: int, axis: int) -> np.ndarray:
  """The pixels of `mask` on runs of at least `length` along `axis` (a binary
  opening with a line, in time linear in the pixels)."""
  length += 1 - length % 2  # odd: the window is centred
  full = ndimage.uniform_filter1d(
    mask.astype(np.float32), length, axis, mode='constant'
  )
  return ndimage.maximum_filter1d(full > 1 - 1e-4, length, axis, mode='constant')


def _page_lines(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The pixels of `mask` on ink runs across most of the picture (ruled and
  squared paper, borders): `(horizontal, vertical)`. A run may wobble by a
  pixel and have gaps of a few pixels (a faint line, thresholded)."""
  rows, cols = mask.shape
  gap = max(3, max(mask.shape) // 30)
  along_rows = ndimage.binary_dilation(mask, np.ones((3, gap)))
  along_cols = ndimage.binary_dilation(mask, np.ones((gap, 3)))
  horizontal = _runs(along_rows, max(2, int(cols * LINE_FRACTION)), axis=1)
  vertical = _runs(along_cols, max(2, int(rows * LINE_FRACTION)), axis=0)
  # Lines are thin: ink thicker across them (a bar, a stroke crossing) stays.
  thick = max(3, max(mask.shape) // 40) + 1
  horizontal &= ~_runs(mask, thick, axis=0)
  vertical &= ~_runs(mask, thick, axis=1)
  return horizontal & mask, vertical & mask


def _bridge(digit: np.ndarray, horizontal: np.ndarray, vertical: np.ndarray):
  """`digit` with the stretches of page lines that cut across its strokes."""
  span = max(3, max(digit.shape) // 40)
  across = ndimage.binary_closing(digit, structure=np.ones((2 * span + 1, 1)))
  along = ndimage.binary_closing(digit, structure=np.ones((1, 2 * span + 1)))
  return digit | (across & horizontal) | (along & vertical)


def _digit_mask(mask: np.ndarray) -> tuple[np.ndarray, float]:
  """The dominant ink component near the centre, and the components near it
  (or near those, and so on); and the largest component left out, as a part
  of the kept ink (0 when none is left out)."""
  labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
  if count == 0:
    return mask, 0.0
  index = np.arange(1, count + 1)
  areas = ndimage.sum_labels(mask, labels, index)
  centres = np.array(ndimage.center_of_mass(mask, labels, index))
  middle = (np.array(mask.shape) - 1) / 2
  distance = np.linalg.norm((centres - middle) / np.array(mask.shape), axis=1)
  score = areas * np.exp(-((distance / 0.35) ** 2))
  main = int(np.argmax(score))
  boxes = np.array(
    [
      (b[0].start, b[0].stop, b[1].start, b[1].stop)
      for b in ndimage.find_objects(labels)
    ]
  )
  reach = 0.3 * max(boxes[main, 1] - boxes[main, 0], boxes[main, 3] - boxes[main, 2])
  candidates = areas >= max(0.06 * areas[main], MIN_DIGIT_PIXELS / 2)
  kept = np.zeros(count, bool)
  kept[main] = True
  while True:
    top, bottom = boxes[kept, 0].min(), boxes[kept, 1].max()
    left, right = boxes[kept, 2].min(), boxes[kept, 3].max()
    gap_rows = np.maximum.reduce([top - boxes[:, 1], boxes[:, 0] - bottom, 0 * areas])
    gap_cols = np.maximum.reduce([left - boxes[:, 3], boxes[:, 2] - right, 0 * areas])
    near = candidates & (np.maximum(gap_rows, gap_cols) <= reach) & ~kept
    if not near.any():
      # Another digit beside this one: a mark left out, beside the kept ink
      # (not above or below it, as the parts of a broken digit can be), and
      # as tall as a good part of it.
      height = bottom - top
      rows_shared = np.minimum(boxes[:, 1], bottom) - np.maximum(boxes[:, 0], top)
      beside = (gap_cols > 0) & (rows_shared >= 0.5 * height)
      beside &= boxes[:, 1] - boxes[:, 0] >= 0.5 * height
      left_out = areas[~kept & beside & (areas >= MIN_DIGIT_PIXELS)]
      other = float(left_out.max() / areas[kept].sum()) if left_out.size else 0.0
      return np.concatenate([[False], kept])[labels], other
    kept |= near


def ink_of(
  gray: np.ndarray,
  zoom: bool = True,
  size: int | None = None,
  dark: bool | None = None,
) -> tuple:
  """The ink of a picture, and the part of it that is the digit.

  Args:
    gray: `(rows, cols)` in [0, 1].
    zoom: look again, closer, at a digit that is small in the picture.
    size: the width of the window that tells paper from strokes (pixels at
      the working size); by default a sixth of the picture, then, once the
      digit is found, a few times its strokes' width (a narrower window
      follows shadows across the page more closely).
    dark: whether the ink is darker than the paper (by default, `_dark_ink`).

  Returns:
    `(ink, digit, problem, detail)`: `ink` in [0, 1] (1 = full ink), `digit`
    the boolean mask of the kept ink, and `Digit.problem` and `detail`.
  """
  original, gray = gray, _reduce(gray)
  nothing = np.zeros_like(gray), np.zeros(gray.shape, bool), 'blank'
  if gray.max() - gray.min() < MIN_CONTRAST:
    return *nothing, 'no ink: the picture is one flat tone'
  if dark is None:
    dark = _dark_ink(gray)
  covered = _covered(gray, dark)
  if covered > MAX_DARK_PART:
    mask = np.ones(gray.shape, bool)
    return (
      np.ones_like(gray),
      mask,
      'mostly ink',
      f'ink covers {covered:.0%} of the picture',
    )
  first_look = size is None
  size = size or max(3, max(gray.shape) // 6)  # wider than any stroke
  smooth = ndimage.median_filter(gray, size=3)  # specks and sensor noise
  # A closing fills in the strokes, thinner than `size`, and keeps the
  # paper's sharp edges (a shadow across the page) where they are.
  if dark:
    paper = ndimage.grey_closing(smooth, size=size, mode='nearest')
    ink = 1 - smooth / np.maximum(paper, 1e-3)  # a part of the paper's tone
    # Along a sharp edge of the paper's tone (a shadow's), the estimate is a
    # pixel off here and there: what it leaves there is not ink.
    slope = np.hypot(ndimage.sobel(paper, 0), ndimage.sobel(paper, 1)) / 8
    shadow_edge = ndimage.binary_dilation(slope > SHADOW_EDGE * paper, iterations=2)
    ink[shadow_edge] = np.minimum(ink[shadow_edge], 0)
  else:
    ink = smooth - ndimage.grey_opening(smooth, size=size, mode='nearest')
  # Paper at 0; its noise, robustly (most pixels are paper).
  ink -= np.median(ink)
  noise = 1.4826 * float(np.median(np.abs(ink))) + 1e-3
  ink = np.clip(ink, 0, None)
  strongest = float(ink.max())
  if strongest < max(MIN_CONTRAST, 6 * noise):
    return *nothing, 'no ink stands out from the paper'
  threshold = max(_otsu(ink / strongest) * strongest, 4 * noise, 0.2 * strongest)
  # Hysteresis: fainter ink counts where it joins ink above the threshold.
  weak, _ = ndimage.label(ink > max(threshold / 2, 3 * noise), np.ones((3, 3)))
  mask = np.isin(weak, np.unique(weak[ink > threshold])) & (weak > 0)
  coverage = mask.mean()
  if coverage > MAX_INK:
    return ink, mask, 'mostly ink', f'ink covers {coverage:.0%} of the picture'
  horizontal, vertical = _page_lines(mask)
  mask &= ~(horizontal | vertical)
  if not mask.any():
    return *nothing, 'only page lines, no digit'
  kept, other = _digit_mask(mask)
  digit = _bridge(kept, horizontal, vertical)
  rows = np.flatnonzero(digit.any(axis=1))
  cols = np.flatnonzero(digit.any(axis=0))
  height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
  if digit.sum() < MIN_DIGIT_PIXELS:
    return *nothing, 'only specks'
  if zoom and max(height / digit.shape[0], width / digit.shape[1]) < ZOOM_BELOW:
    # A small digit in a large picture: look again at its surroundings only.
    scale = original.shape[0] / gray.shape[0]
    margin = max(height, width)
    top = int(max(rows[0] - margin, 0) * scale)
    bottom = int(min(rows[-1] + 1 + margin, gray.shape[0]) * scale)
    left = int(max(cols[0] - margin, 0) * scale)
    right = int(min(cols[-1] + 1 + margin, gray.shape[1]) * scale)
    return ink_of(original[top:bottom, left:right], zoom=False)
  stroke = _stroke_width(digit)
  if first_look and 3 * stroke + 3 < size:
    return ink_of(original, zoom=False, size=int(3 * stroke + 3), dark=dark)
  ink = np.clip(ink / np.quantile(ink[digit], 0.9), 0, 1)
  box = height * width / digit.size
  if box > MAX_KEPT_BOX:
    return ink, digit, 'mostly ink', f'the ink kept spans {box:.0%} of the picture'
  if other >= OTHER_MARK:
    return (
      ink,
      digit,
      'several marks',
      f'another mark, {other:.0%} the size of the one read, was left out',
    )
  return ink, digit, None, ''


def fit_to_mnist(ink: np.ndarray) -> np.ndarray:
  """Ink `(rows, cols)` in [0, 1], cropped to the digit -> the 28x28 field:
  the longer side scaled to 20 pixels, the centre of mass at (14, 14)."""
  result = np.zeros(IMAGE_SHAPE, np.float32)
  scale = BOX_SIZE / max(ink.shape)
  height = max(1, round(ink.shape[0] * scale))
  width = max(1, round(ink.shape[1] * scale))
  resized = Image.fromarray(ink.astype(np.float32)).resize(
    (width, height), Image.Resampling.LANCZOS
  )
  digit = np.clip(np.asarray(resized), 0, None)  # Lanczos rings below zero
  digit = np.clip(digit / digit.max(), 0, 1) if digit.max() > 0 else digit
  mass = digit.sum()
  if mass <= 0:
    return result
  center_row = (digit.sum(axis=1) @ np.arange(height)) / mass
  center_col = (digit.sum(axis=0) @ np.arange(width)) / mass
  top = int(np.clip(round(IMAGE_SHAPE[0] / 2 - center_row), 0, IMAGE_SHAPE[0] - height))
  left = int(np.clip(round(IMAGE_SHAPE[1] / 2 - center_col), 0, IMAGE_SHAPE[1] - width))
  result[top : top + height, left : left + width] = digit
  return result


def preprocess_digit(image: Image.Image) -> Digit:
  """Turns a picture of one digit into an MNIST-like image, or says why not.

  Args:
    image: any PIL image of a single digit: dark on light or light on dark,
      a clean rendering or a photo of paper or a board.

  Returns:
    The `Digit`.
  """
  ink, digit, problem, detail = ink_of(grayscale(image))
  if problem == 'blank' or not digit.any():
    return Digit(np.zeros(IMAGE_SHAPE, np.float32), 'blank', detail or 'no ink')
  # The kept components with a one-pixel margin, for their antialiased edges.
  kept = ndimage.binary_dilation(digit, iterations=1)
  rows = np.flatnonzero(digit.any(axis=1))
  cols = np.flatnonzero(digit.any(axis=0))
  crop = (ink * kept)[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
  return Digit(fit_to_mnist(_mnist_strokes(crop, digit)), problem, detail)


def _mnist_strokes(crop: np.ndarray, digit: np.ndarray) -> np.ndarray:
  """`crop` with its strokes thickened to MNIST's share of the digit's size
  (a pen draws thinner lines, for the size of the digit, than MNIST's)."""
  width = _stroke_width(digit)
  target = STROKE * max(crop.shape)
  radius = int(round((target - width) / 2))
  if radius < 1:
    return crop
  disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
  return ndimage.grey_dilation(np.pad(crop, radius), footprint=disk)


def preprocess(image: Image.Image) -> np.ndarray:
  """`preprocess_digit(image).image`: `(28, 28)` float32 in [0, 1]."""
  return preprocess_digit(image).image
