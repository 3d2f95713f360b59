"""--mode=predict's library: MNIST-style preprocessing, paths, predictions, errors."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import photo_digits
from configs import model_b
from mlp import digit_image
from mlp.errors import UserError
from mlp.modes import predict, train
from tests.conftest import REPO, error_lines, run_main

DIGITS = range(20)  # test images rendered as "photos"


def render(digit: np.ndarray, index: int, dark_on_light: bool = True) -> Image.Image:
  """A 28x28 MNIST digit as a 200x200 picture: upscaled 5x, off centre."""
  big = np.asarray(Image.fromarray(digit).resize((140, 140), Image.Resampling.BICUBIC))
  paper = 255 if dark_on_light else 0
  canvas = Image.new('L', (200, 200), paper)
  ink = Image.fromarray(255 - big if dark_on_light else big)
  canvas.paste(ink, (5 + 7 * (index % 8), 55 - 9 * (index % 7)))
  return canvas


def correlation(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# With `pytest -n`, this module's tests run in one worker, which trains the
# module's model once.
pytestmark = pytest.mark.xdist_group('predict')


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  """configs/model_b.py (H 100) for 800 steps (val accuracy 0.92), no plots."""
  workdir = tmp_path_factory.mktemp('trained')
  config = model_b.get_config()
  config.num_iters, config.write_plots = 800, False
  train.run(config, str(workdir))
  return workdir


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory, mnist):
  """PNG renderings of the first test digits, named `d{index}_{label}.png`."""
  directory = tmp_path_factory.mktemp('images')
  for i in DIGITS:
    digit = mnist.test_images[i].reshape(28, 28)
    path = directory / f'd{i:02d}_{mnist.test_labels[i]}.png'
    render(digit, i, dark_on_light=i % 2 == 0).save(path)
  return directory


@pytest.mark.parametrize('dark_on_light', [True, False])
def test_preprocess_recovers_the_mnist_digit(mnist, dark_on_light):
  correlations = []
  for i in range(10):
    digit = mnist.test_images[i].reshape(28, 28)
    result = predict.preprocess(render(digit, i, dark_on_light))
    assert result.shape == (28, 28) and result.dtype == np.float32
    assert result.min() >= 0 and result.max() == pytest.approx(1.0)
    correlations.append(correlation(result, digit / 255))
  # A one-pixel difference in rounding the centre of mass costs a thin digit more.
  assert np.mean(correlations) > 0.9 and min(correlations) > 0.6, correlations
  assert correlations[0] > 0.8


def test_preprocess_fits_20x20_and_centres_the_mass():
  ink = np.zeros((300, 120), np.uint8)  # a tall bar on black, near a corner
  ink[10:250, 5:45] = 255
  result = predict.preprocess(Image.fromarray(ink))
  rows = np.flatnonzero(result.max(axis=1) > 0.1)
  assert rows[-1] - rows[0] + 1 == 20  # the longer side is 20 pixels
  mass = result.sum()
  center = (
    result.sum(axis=1) @ np.arange(28) / mass,
    result.sum(axis=0) @ np.arange(28) / mass,
  )
  np.testing.assert_allclose(center, (14, 14), atol=0.6)


def test_preprocess_of_other_modes(mnist):
  digit = mnist.test_images[0].reshape(28, 28)
  big = np.asarray(Image.fromarray(digit).resize((112, 112)))
  rgba = np.zeros((150, 150, 4), np.uint8)  # black ink on a transparent canvas
  rgba[10:122, 20:132, 3] = big
  assert correlation(predict.preprocess(Image.fromarray(rgba)), digit / 255) > 0.8
  rgb = np.stack([255 - big] * 3, axis=-1)
  assert correlation(predict.preprocess(Image.fromarray(rgb)), digit / 255) > 0.8
  blank = predict.preprocess(Image.new('L', (40, 30), 255))
  assert blank.shape == (28, 28) and not blank.any()


def test_expand_paths(image_dir):
  first, second = sorted(image_dir.glob('d0*.png'))[:2]
  spec = f'{image_dir}/d0*.png, {first},{image_dir}/none*.png,,{image_dir}/missing.png'
  paths = predict.expand_paths(spec)
  expected = [str(p) for p in sorted(image_dir.glob('d0*.png'))]
  assert paths == [*expected, f'{image_dir}/none*.png', f'{image_dir}/missing.png']
  assert predict.expand_paths(f'{second}') == [str(second)]
  for empty in ('', ' , ,'):
    with pytest.raises(UserError, match='--images'):
      predict.expand_paths(empty)


def test_predictions_agree_with_labels(trained_workdir, image_dir):
  out, err = io.StringIO(), io.StringIO()
  code = predict.run(trained_workdir, f'{image_dir}/*.png', False, out, err)
  assert code == 0 and err.getvalue() == ''
  lines = [line.split('\t') for line in out.getvalue().splitlines()]
  assert len(lines) == len(DIGITS)
  for _, label, probability in lines:
    assert 0 <= int(label) <= 9 and len(probability.split('.')[1]) == 4
  correct = sum(path.endswith(f'_{label}.png') for path, label, _ in lines)
  assert correct >= 16, out.getvalue()


def test_missing_and_unreadable_files(trained_workdir, image_dir, tmp_path):
  not_image = tmp_path / 'notes.png'
  not_image.write_text('not an image')
  good = sorted(image_dir.glob('*.png'))[:2]
  spec = ','.join([str(tmp_path / 'missing.png'), str(not_image), *map(str, good)])
  stream = io.StringIO()  # one stream for both, to check the order
  code = predict.run(trained_workdir, spec, False, stream, stream)
  assert code == 1
  lines = stream.getvalue().splitlines()
  assert [line.split('\t')[0] for line in lines[:2]] == [str(p) for p in good]
  assert lines[2] == f'Error: {tmp_path / "missing.png"}: no such file'
  assert lines[3].startswith(f'Error: {not_image}: ') and len(lines) == 4


def test_json_output(trained_workdir, image_dir):
  out, err = io.StringIO(), io.StringIO()
  spec = f'{image_dir}/d00_*.png,{image_dir}/d01_*.png'
  assert predict.run(trained_workdir, spec, True, out, err) == 0
  results = json.loads(out.getvalue())
  assert len(results) == 2
  for result in results:
    assert set(result) >= {'path', 'label', 'probabilities'}
    assert len(result['probabilities']) == 10
    assert sum(result['probabilities']) == pytest.approx(1.0, abs=1e-4)
    assert result['label'] == int(np.argmax(result['probabilities']))


def test_sweep_workdir_and_bad_params(trained_workdir, image_dir, tmp_path):
  sweep_dir = tmp_path / 'sweep'
  sweep_dir.mkdir()
  shutil.copy(trained_workdir / 'params.npz', sweep_dir / 'best_params.npz')
  out = io.StringIO()
  image = next(image_dir.glob('*.png'))
  assert predict.run(sweep_dir, str(image), False, out, io.StringIO()) == 0
  assert out.getvalue().startswith(f'{image}\t')

  wrong = tmp_path / 'wrong'
  wrong.mkdir()
  params = {'W1': np.zeros((100, 8)), 'b1': np.zeros(8)}
  params |= {'W2': np.zeros((8, 10)), 'b2': np.zeros(10)}
  np.savez(wrong / 'params.npz', **params)
  with pytest.raises(UserError, match=r'need W1 \(784, H\)'):
    predict.run(wrong, str(image), False, io.StringIO(), io.StringIO())
  with pytest.raises(UserError, match='no saved params'):
    predict.run(tmp_path, str(image), False, io.StringIO(), io.StringIO())
  with pytest.raises(UserError, match='does not exist'):
    predict.run(tmp_path / 'nope', str(image), False)
  with pytest.raises(UserError, match='is a file, not a directory'):
    predict.run(image, str(image), False)


def test_predict_from_the_command_line(tmp_path, trained_workdir, image_dir):
  good = sorted(image_dir.glob('*.png'))[0]
  missing = tmp_path / 'missing.png'
  args = ['--mode=predict', f'--workdir={trained_workdir}', '--json']
  result = run_main(*args, f'--images={good},{missing}')
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  (readable,) = json.loads(result.stdout)
  assert readable['path'] == str(good) and 0 <= readable['label'] <= 9
  assert len(readable['probabilities']) == 10
  assert error_lines(result.stderr) == [f'Error: {missing}: no such file']


@pytest.mark.parametrize('style', [s for s in photo_digits.STYLES if s != 'clean'])
def test_photo_like_pictures_give_back_the_digit(mnist, style):
  """Uneven light, ruled and squared paper, a noisy grey page, chalk on a dark
  board, a small digit in a large picture: the digit comes back, not the page
  (a naive crop takes in the shadow, the lines or the noise)."""
  correlations = []
  for i in range(20, 21 if style == 'small' else 22):  # 'small' is 1200x900
    digit = mnist.test_images[i].reshape(28, 28)
    result = digit_image.preprocess_digit(photo_digits.photo(digit, style, seed=i))
    assert result.problem is None, (i, result.detail)
    correlations.append(correlation(result.image, digit / 255))
  assert min(correlations) > 0.55 and np.mean(correlations) > 0.65, correlations


def flat(value: int, size=(60, 80)) -> Image.Image:
  return Image.new('L', size, value)


def test_pictures_without_a_digit_are_flagged(trained_workdir, tmp_path):
  rng = np.random.default_rng(0)
  faint = np.clip(235 + rng.normal(0, 2, (90, 120)), 0, 255).astype(np.uint8)
  faint[40, 60] = 120  # one speck of dust
  mostly_ink = np.full((100, 100), 250, np.uint8)
  mostly_ink[8:92, 8:92] = 20  # a dark object over most of the page
  pictures = {
    'white.png': flat(255),
    'black.png': flat(0),
    'faint.png': Image.fromarray(faint),
    'mostly_ink.png': Image.fromarray(mostly_ink),
  }
  for name, picture in pictures.items():
    picture.save(tmp_path / name)
  spec = ','.join(str(tmp_path / name) for name in pictures)
  out, err = io.StringIO(), io.StringIO()
  assert predict.run(trained_workdir, spec, False, out, err) == 0
  lines = [line.split('\t') for line in out.getvalue().splitlines()]
  assert [label for _, label, _ in lines[:3]] == ['-', '-', '-']
  assert [probability for _, _, probability in lines[:3]] == ['-', '-', '-']
  assert lines[3][1].isdigit()  # a guess, flagged below
  warnings = err.getvalue().splitlines()
  assert len(warnings) == 4
  for name, warning in zip(pictures, warnings, strict=True):
    assert warning.startswith(f'Warning: {tmp_path / name}: ')
  assert 'not classified' in warnings[0] and 'one flat tone' in warnings[0]
  assert 'no ink stands out' in warnings[2]
  assert 'ink covers 71% of the picture' in warnings[3] and 'is a guess' in warnings[3]

  out = io.StringIO()
  assert predict.run(trained_workdir, spec, True, out, io.StringIO()) == 0
  results = json.loads(out.getvalue())
  assert [r['flag'] for r in results] == ['blank'] * 3 + ['mostly ink']
  assert all(r['label'] is None and r['probabilities'] is None for r in results[:3])
  assert results[3]['label'] == int(lines[3][1]) and results[3]['warning']


def test_samples_and_save_preprocessed(trained_workdir, tmp_path):
  """The README's samples: read, none flagged, mostly right even with this
  weaker model; the 28x28 images the model saw, saved."""
  samples = sorted((REPO / 'docs' / 'samples').glob('*.jpg'))
  assert len(samples) == len(photo_digits.STYLES)
  seen = tmp_path / 'seen'
  out = io.StringIO()
  code = predict.run(
    trained_workdir, f'{REPO}/docs/samples/*.jpg', True, out, io.StringIO(), str(seen)
  )
  assert code == 0
  results = json.loads(out.getvalue())
  assert all(r['flag'] is None for r in results)
  correct = sum(Path(r['path']).stem.endswith(f'_{r["label"]}') for r in results)
  assert correct >= len(samples) - 1, results
  saved = sorted(seen.glob('*.png'))
  assert [p.stem for p in saved] == [p.stem for p in samples]
  for path, sample in zip(saved, samples, strict=True):
    with Image.open(path) as image:
      assert image.size == (28, 28) and image.mode == 'L'
      with Image.open(sample) as picture:
        expected = digit_image.preprocess(picture)
      np.testing.assert_array_equal(np.asarray(image), np.round(expected * 255))
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  with pytest.raises(UserError, match='--save_preprocessed'):
    predict.run(
      trained_workdir,
      str(samples[0]),
      False,
      io.StringIO(),
      io.StringIO(),
      str(a_file / 'x'),
    )


def test_two_digits_side_by_side_are_flagged(mnist):
  """The digit near the centre is read, and the other one is named: beside it
  at any gap wider than the strokes' reach; a part far above or below it is
  not another digit."""
  first, second = (mnist.test_images[i].reshape(28, 28) for i in (0, 1))
  for gap in (6, 30):
    pair = np.zeros((28, 56 + gap), np.uint8)
    pair[:, :28], pair[:, 28 + gap :] = first, second
    big = Image.fromarray(255 - pair).resize(((56 + gap) * 5, 140))
    page = Image.new('L', (big.width + 40, 200), 255)
    page.paste(big, (20, 30))
    digit = digit_image.preprocess_digit(page)
    assert digit.problem == 'several marks', (gap, digit.detail)
    assert 'another mark' in digit.detail and 'was left out' in digit.detail
  page = np.full((300, 300), 255, np.uint8)
  page[20:160, 140:160] = 0  # a one
  below = page.copy()
  below[250:265, 110:190] = 0  # a bar far below it: a part, not a digit beside
  assert digit_image.preprocess_digit(Image.fromarray(below)).problem is None
  page[20:160, 240:260] = 0  # another one, beside it
  assert digit_image.preprocess_digit(Image.fromarray(page)).problem == 'several marks'
