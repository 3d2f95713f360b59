"""`--mode=serve` against the real server: its routes, bad requests, concurrent
readings equal to `--mode=predict`'s, a port in use, Ctrl-C, and the page in
headless Chromium.

One server process (`main.py --mode=serve --port=0`) answers every test here;
it serves a copy of the suite's `trained_workdir`, so that the check that the
workdir is only read cannot see another test's writes.
"""

import base64
import http.client
import io
import json
import shlex
import shutil
import signal
import socket
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlp import classifier, web
from mlp.errors import UserError
from mlp.modes import predict, serve
from tests.conftest import REPO, child_env, error_lines, main_command

pytestmark = pytest.mark.xdist_group('trained_workdir')
SAMPLES = sorted((REPO / 'docs' / 'samples').glob('*.jpg'))


def snapshot(directory: Path) -> dict:
  """Every file below `directory`: its size and modification time."""
  return {
    str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
    for p in sorted(directory.rglob('*'))
  }


class Server:
  """`main.py --mode=serve` on a free port; started again if a test stopped it."""

  def __init__(self, workdir: Path, log: Path):
    self.workdir, self.log = workdir, log
    self.process = None

  def start(self) -> None:
    self.process = subprocess.Popen(
      main_command('--mode=serve', f'--workdir={self.workdir}', '--port=0'),
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=self.log.open('w'),  # a file: the access log never fills a pipe
      text=True,
      env=child_env(),
    )
    line = self.process.stdout.readline()  # printed once it listens
    assert line.startswith('Serving '), (line, self.log.read_text()[-2000:])
    self.url = line.split(' at ')[1].split()[0]
    self.port = urllib.parse.urlsplit(self.url).port

  def connection(self) -> http.client.HTTPConnection:
    if self.process is None or self.process.poll() is not None:
      self.start()
    return http.client.HTTPConnection('127.0.0.1', self.port, timeout=60)

  def request(self, method: str, path: str, body=None, headers=None):
    """`(status, headers, body)` of one request on a new connection."""
    connection = self.connection()
    try:
      connection.request(method, path, body=body, headers=headers or {})
      response = connection.getresponse()
      return response.status, response.headers, response.read()
    finally:
      connection.close()

  def predict(self, picture: bytes, content_type: str = 'image/png') -> dict:
    status, _, body = self.request(
      'POST', '/api/predict', picture, {'Content-Type': content_type}
    )
    assert status == 200, body
    return json.loads(body)

  def stop(self) -> None:
    if self.process is not None and self.process.poll() is None:
      self.process.kill()
      self.process.wait()


@pytest.fixture(scope='module')
def served(trained_workdir, tmp_path_factory):
  """A copy of `trained_workdir`, its files before serving, and its server."""
  workdir = tmp_path_factory.mktemp('served') / 'model'
  shutil.copytree(trained_workdir[0], workdir, ignore=shutil.ignore_patterns('.lock'))
  before = snapshot(workdir)
  server = Server(workdir, workdir.parent / 'server.log')
  server.start()
  yield workdir, before, server
  server.stop()


@pytest.fixture
def server(served) -> Server:
  return served[2]


def png_bytes(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def predict_mode(workdir: Path, path: Path) -> dict:
  """`--mode=predict --json` on one picture (in this process)."""
  out, err = io.StringIO(), io.StringIO()
  assert predict.run(str(workdir), str(path), True, out, err) == 0, err.getvalue()
  (result,) = json.loads(out.getvalue())
  return result


def assert_same_reading(reply: dict, expected: dict) -> None:
  assert reply['label'] == expected['label']
  assert reply['probability'] == expected['probability']
  assert reply['probabilities'] == expected['probabilities']
  assert reply['flag'] == expected['flag']
  assert reply['warnings'] == ([expected['warning']] if expected['warning'] else [])


def test_the_readmes_serve_and_curl_commands_work_as_written(served):
  """README's "Draw a digit": its serve command is the `served` server's (with
  the copy's workdir, and `--port=0` for a free port), and its curl command,
  sent to that server, reads the sample as `--mode=predict` does."""
  from tests.test_readme import readme_commands, with_workdir

  workdir, _, server = served
  (serve_command,) = [c for c in readme_commands() if '--mode=serve' in c]
  words = shlex.split(serve_command)
  assert words[:2] == ['python', 'main.py']
  assert server.process.args == main_command(
    *with_workdir(words[2:], workdir), '--port=0'
  )
  (curl_command,) = [c for c in readme_commands() if c.startswith('curl ')]
  if shutil.which('curl') is None:
    pytest.skip('curl is not installed (.ci/run installs it)')
  curl = shlex.split(curl_command)
  readme_url = 'http://127.0.0.1:8000'
  assert curl[-1].startswith(readme_url)
  curl[-1] = curl[-1].replace(readme_url, f'http://127.0.0.1:{server.port}')
  reply = subprocess.run(
    curl, cwd=REPO, capture_output=True, text=True, check=True, timeout=60
  )
  sample = REPO / curl[curl.index('--data-binary') + 1].removeprefix('@')
  assert_same_reading(json.loads(reply.stdout), predict_mode(workdir, sample))


def test_every_route(served, mnist):
  workdir, _, server = served
  for path, (name, content_type) in web.STATIC_FILES.items():
    status, headers, body = server.request('GET', path)
    assert status == 200 and headers['Content-Type'] == content_type
    assert body == (REPO / 'mlp' / 'serve_static' / name).read_bytes()
    assert "default-src 'self'" in headers['Content-Security-Policy']
    # Offline: nothing is fetched from another address.
    assert b'http:' not in body and b'https:' not in body
    status, headers, head = server.request('HEAD', path)
    assert (status, head, int(headers['Content-Length'])) == (200, b'', len(body))
  page = server.request('GET', '/?from=bookmark')[2].decode()
  assert '<canvas id="pad"' in page and 'src="/app.js"' in page

  status, headers, body = server.request('GET', '/api/model')
  card = json.loads(body)
  summary = json.loads((workdir / 'summary.json').read_text())
  assert status == 200 and headers['Content-Type'] == 'application/json'
  assert card['layers'] == [784, 16, 10] and card['params'] == 'params.npz'
  assert card['test_accuracy'] == summary['test_accuracy']
  assert card['val_accuracy'] == summary['val_accuracy']
  assert card['steps'] == summary['steps']
  assert card['config'] == json.loads((workdir / 'config.json').read_text())
  assert ['hidden_size', 16] in card['options'] and card['name'] == 'model'

  digit = Image.fromarray(255 - mnist.test_images[0].reshape(28, 28))
  picture = digit.resize((140, 140), Image.Resampling.BICUBIC)
  path = workdir.parent / 'digit.png'
  picture.save(path)
  reply = server.predict(path.read_bytes())
  assert_same_reading(reply, predict_mode(workdir, path))
  seen = predict.predict(classifier.load(workdir).params, [str(path)])
  np.testing.assert_allclose(reply['image'], seen[0]['image'], atol=5e-5)
  assert np.shape(reply['image']) == (28, 28)


def _bomb() -> bytes:
  """A PNG of a few kilobytes that decodes to 30 megapixels."""
  return png_bytes(Image.new('1', (6000, 5000)))


def _gif() -> bytes:
  buffer = io.BytesIO()
  Image.new('L', (40, 40), 255).save(buffer, format='GIF')
  return buffer.getvalue()


PNG = 'image/png'
BAD_REQUESTS = {
  # name: (method, path, headers, body, status)
  'unknown path': ('GET', '/nothing.html', {}, None, 404),
  'dot-dot': ('GET', '/../mlp/web.py', {}, None, 404),
  'dot-dot below a route': ('GET', '/app.js/../../main.py', {}, None, 404),
  'encoded dot-dot': ('GET', '/%2e%2e/%2e%2e/etc/passwd', {}, None, 404),
  'encoded slash': ('GET', '/..%2f..%2fmain.py', {}, None, 404),
  'double slash': ('GET', '//etc/passwd', {}, None, 404),
  'a static file by its name': ('GET', '/index.html', {}, None, 404),
  'a directory': ('GET', '/serve_static/', {}, None, 404),
  'a page with POST': ('POST', '/', {'Content-Type': PNG}, b'x', 405),
  'the API with GET': ('GET', '/api/predict', {}, None, 405),
  'DELETE': ('DELETE', '/', {}, None, 405),
  'an unknown method': ('BREW', '/api/predict', {}, None, 405),
  'no content type': ('POST', '/api/predict', {}, b'abc', 415),
  'text': ('POST', '/api/predict', {'Content-Type': 'text/plain'}, b'7', 415),
  'a form': (
    'POST',
    '/api/predict',
    {'Content-Type': 'multipart/form-data; boundary=x'},
    b'--x--',
    415,
  ),
  'not a number as length': (
    'POST',
    '/api/predict',
    {'Content-Type': PNG, 'Content-Length': 'many'},
    None,
    400,
  ),
  'chunked': (
    'POST',
    '/api/predict',
    {'Content-Type': PNG, 'Transfer-Encoding': 'chunked'},
    None,
    411,
  ),
  'no length': ('POST', '/api/predict', {'Content-Type': PNG}, None, 411),
  'a body over 10 MB': (
    'POST',
    '/api/predict',
    {'Content-Type': PNG, 'Content-Length': str(web.MAX_BODY_BYTES + 1)},
    None,
    413,
  ),
  'not an image': ('POST', '/api/predict', {'Content-Type': PNG}, b'\x89PNG...', 422),
  'a cut PNG': ('POST', '/api/predict', {'Content-Type': PNG}, 'cut', 422),
  'a GIF': ('POST', '/api/predict', {'Content-Type': PNG}, 'gif', 422),
  'a decompression bomb': ('POST', '/api/predict', {'Content-Type': PNG}, 'bomb', 413),
}


@pytest.mark.parametrize('name', BAD_REQUESTS)
def test_a_bad_request_gets_its_4xx_and_the_server_goes_on(server, name):
  method, path, headers, body, expected = BAD_REQUESTS[name]
  if body == 'cut':
    body = png_bytes(Image.new('L', (200, 200), 128))[:-40]
  body = {'gif': _gif, 'bomb': _bomb}.get(body, lambda: body)()
  connection = server.connection()
  try:
    # By hand: http.client would add a Content-Length, and normalise the path.
    connection.putrequest(method, path, skip_accept_encoding=True)
    for key, value in headers.items():
      connection.putheader(key, value)
    if body is not None:
      connection.putheader('Content-Length', str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    status, reply = response.status, json.loads(response.read())
  finally:
    connection.close()
  assert status == expected, reply
  assert isinstance(reply['error'], str) and reply['error']
  if expected == 405:
    assert response.headers['Allow'] in ('GET, HEAD', 'POST')
  assert server.request('GET', '/api/model')[0] == 200  # still serving


def test_a_malformed_request_line_gets_a_400(server):
  server.connection().close()  # started, if a test stopped it
  with socket.create_connection(('127.0.0.1', server.port), timeout=60) as raw:
    raw.sendall(b'NOT HTTP AT ALL\r\n\r\n')
    reply = raw.makefile('rb').read()
  head, _, body = reply.partition(b'\r\n\r\n')
  assert head.startswith(b'HTTP/1.1 400 ') and json.loads(body)['error']
  assert server.request('GET', '/')[0] == 200


def test_fifty_concurrent_readings_equal_predict_mode(served, mnist, tmp_path):
  """Five MNIST digits drawn dark on light, three photo-like samples, a blank
  page, 50 requests at once: each reply is `--mode=predict`'s on its picture."""
  workdir, _, server = served
  pictures = []
  for i in range(5):
    digit = Image.fromarray(255 - mnist.test_images[i].reshape(28, 28))
    pictures.append((digit.resize((112, 112), Image.Resampling.BICUBIC), 'png'))
  for sample in SAMPLES[:3]:
    with Image.open(sample) as photo:
      photo.load()
      pictures.append((photo, 'jpeg'))
  pictures.append((Image.new('L', (100, 100), 255), 'png'))
  paths = []
  for i, (picture, kind) in enumerate(pictures):
    paths.append(tmp_path / f'{i}.{kind}')
    picture.save(paths[-1], format=kind.upper(), quality=95)
  expected = [predict_mode(workdir, path) for path in paths]
  assert expected[-1]['label'] is None  # the blank page is not classified

  def read(i: int) -> dict:
    path = paths[i % len(paths)]
    return server.predict(path.read_bytes(), f'image/{path.suffix[1:]}')

  with ThreadPoolExecutor(max_workers=50) as pool:
    replies = list(pool.map(read, range(50)))
  for i, reply in enumerate(replies):
    assert_same_reading(reply, expected[i % len(paths)])


def test_a_port_in_use_and_a_foreign_host_are_refused(served):
  workdir, _, server = served
  server.connection().close()  # started, if a test stopped it
  out, err = io.StringIO(), io.StringIO()
  with pytest.raises(UserError, match=rf'port {server.port} is in use .*--port'):
    serve.start(str(workdir), server.port, '127.0.0.1', out, err)
  with pytest.raises(UserError, match='192.0.2.1 is not an address of this machine'):
    serve.start(str(workdir), 0, '192.0.2.1', out, err)
  assert out.getvalue() == err.getvalue() == ''

  with serve.start(str(workdir), 0, '0.0.0.0', out, err) as everywhere:
    port = everywhere.server_address[1]
  assert err.getvalue() == (
    f'Warning: --host=0.0.0.0 lets every machine that reaches this one on port {port}'
    ' use the page (there is no login); leave --host out to serve this machine only\n'
  )
  assert out.getvalue().endswith(f'at http://127.0.0.1:{port}/ (Ctrl-C stops it)\n')


def test_the_page_in_chromium_reads_a_drawing_as_predict_does(served, mnist, tmp_path):
  """The strokes of a seven, drawn with the mouse at a phone's size: the page
  shows `--mode=predict`'s reading of the PNG it sent, and the screenshot
  shows the canvas and the bars. Then a photo of two digits, uploaded: its
  reading and its warning."""
  from bench import browser

  if browser.chromium() is None:
    pytest.skip('Chromium is not installed (Debian: apt-get install chromium)')
  pytest.importorskip('websocket', reason='websocket-client drives Chromium')
  workdir, _, server = served
  server.connection().close()  # started, if a test stopped it
  pair = np.zeros((28, 84), np.uint8)  # two digits side by side, for the upload
  pair[:, :28], pair[:, 56:] = (mnist.test_images[i].reshape(28, 28) for i in (0, 1))
  photo = tmp_path / 'two digits.png'
  Image.fromarray(255 - pair).resize((420, 140)).save(photo)
  shown, screenshot, uploaded = browser.draw_digit(server.url, upload=photo)

  sent = tmp_path / 'sent.png'
  sent.write_bytes(base64.b64decode(shown['png']))
  expected = predict_mode(workdir, sent)
  assert expected['label'] is not None
  assert_same_reading(shown['reading'], expected)
  assert shown['label'] == str(expected['label'])
  assert shown['probability'] == f'{100 * expected["probability"]:.1f}% sure'
  assert [bar['digit'] for bar in shown['bars']] == [str(d) for d in range(10)]
  for bar, probability in zip(shown['bars'], expected['probabilities'], strict=True):
    assert float(bar['probability']) == probability
    assert bar['text'] == f'{100 * probability:.1f}%'
  assert shown['model'].startswith('model: a 784-16-10 network')
  summary = json.loads((workdir / 'summary.json').read_text())
  assert shown['card']['test accuracy'] == f'{summary["test_accuracy"]:.4f}'
  assert shown['card']['steps trained'] == str(summary['steps'])
  assert shown['resources'] and all(
    r.startswith(server.url) for r in shown['resources']
  )

  # At a phone's width: nothing to scroll sideways, the canvas and the bars
  # in view, the canvas most of the width.
  width, height = shown['viewport']['width'], shown['viewport']['height']
  assert (width, height) == browser.PHONE and shown['scrollWidth'] <= width
  boxes = [shown['pad'], shown['seen'], *(bar['track'] for bar in shown['bars'])]
  for box in boxes:
    assert box['left'] >= 0 and box['left'] + box['width'] <= width, box
    assert box['top'] >= 0 and box['top'] + box['height'] <= height, box
  assert shown['pad']['width'] >= 0.8 * width
  with Image.open(io.BytesIO(screenshot)) as image:
    assert image.size == browser.PHONE
    pixels = np.asarray(image.convert('RGB'), np.int32)

  def region(box: dict) -> np.ndarray:
    top, left = round(box['top']) + 2, round(box['left']) + 2
    bottom = round(box['top'] + box['height']) - 2
    right = round(box['left'] + box['width']) - 2
    return pixels[top:bottom, left:right].reshape(-1, 3)

  pad = region(shown['pad']).mean(axis=1)
  assert (pad < 60).mean() > 0.02 and (pad > 240).mean() > 0.5  # ink on paper
  best = shown['bars'][expected['label']]['box']
  assert best['height'] >= 0.5 * shown['bars'][expected['label']]['track']['height']
  # The tallest bar in the page's colour for it (#d9480f).
  np.testing.assert_allclose(region(best).mean(axis=0), (0xD9, 0x48, 0x0F), atol=12)
  assert region(shown['seen']).mean() > 10  # the 28x28 image the model saw

  expected = predict_mode(workdir, photo)
  assert expected['flag'] == 'several marks'
  assert_same_reading(uploaded['reading'], expected)
  assert uploaded['label'] == str(expected['label'])
  assert uploaded['warnings'] == [expected['warning']]
  assert [float(bar['probability']) for bar in uploaded['bars']] == expected[
    'probabilities'
  ]


def test_ctrl_c_stops_the_server_with_one_line(served):
  """SIGINT once the server has answered: exit 130, one `Error:` line, and the
  workdir exactly as it was before serving."""
  workdir, before, server = served
  server.connection().close()  # started, if a test stopped it
  assert server.request('GET', '/')[0] == 200
  server.process.send_signal(signal.SIGINT)
  assert server.process.wait(timeout=60) == 130
  log = server.log.read_text()
  assert error_lines(log) == ['Error: Interrupted'] and 'Traceback' not in log
  assert log.splitlines()[-1] == 'Error: Interrupted'
  assert snapshot(workdir) == before
