"""Pages in headless Chromium, for the tests and the gallery.

  .venv/bin/python bench/browser.py hparams SWEEP_WORKDIR docs/gallery/tensorboard_hparams.png
  .venv/bin/python bench/browser.py serve TRAIN_WORKDIR docs/gallery/serve_page.png

`hparams_page(logdir)` starts `tensorboard --logdir` bound to 127.0.0.1 on a
free port, opens its HParams dashboard, waits until the dashboard has
rendered its table of sessions, and returns the page's text (shadow DOM
included) and a PNG screenshot. `draw_digit(url, strokes)` opens the page of
`main.py --mode=serve` at a phone's size, draws the strokes on its canvas
with the mouse (pointer events, as a person's), waits for the reading of the
drawing and returns what the page shows, the PNG it sent and a screenshot.
Chromium (Debian's `chromium`) is driven over the DevTools protocol
(`websocket-client`) by `Page`.
"""

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

# The page's whole text, through every shadow root, once the HParams table
# lists a session (or after `timeout_ms`).
_TEXT_WHEN_RENDERED = """
new Promise((resolve) => {
  const text = (node) => {
    let out = '';
    for (const child of node.childNodes) {
      out += child.nodeType === Node.TEXT_NODE ? child.textContent + ' ' : text(child);
    }
    return node.shadowRoot ? text(node.shadowRoot) + out : out;
  };
  const started = Date.now();
  const check = () => {
    const all = document.documentElement ? text(document.documentElement) : '';
    if (all.includes(%(marker)s) || Date.now() - started > %(timeout_ms)d) {
      resolve(all);
    } else {
      setTimeout(check, 200);
    }
  };
  check();
})
"""

# What the serve page shows once the reading of the latest drawing is in.
_SHOWN = """
digitPage.settled(%(after)d).then(async (reading) => {
  const box = (element) => {
    const r = element.getBoundingClientRect();
    return {left: r.left, top: r.top, width: r.width, height: r.height};
  };
  const bars = [...document.querySelectorAll('#bars li')];
  return {
    reading,
    label: document.getElementById('label').textContent,
    probability: document.getElementById('probability').textContent,
    bars: bars.map((li) => ({
      digit: li.dataset.digit,
      probability: li.dataset.probability,
      text: li.querySelector('.value').textContent,
      box: box(li.querySelector('.bar')),
      track: box(li.querySelector('.track')),
    })),
    warnings: [...document.querySelectorAll('#warnings li')].map((li) => li.textContent),
    model: document.getElementById('model-name').textContent,
    card: Object.fromEntries(
      [...document.querySelectorAll('#card dt')].map((dt) => [
        dt.textContent,
        dt.nextElementSibling.textContent,
      ]),
    ),
    pad: box(document.getElementById('pad')),
    seen: box(document.getElementById('seen')),
    viewport: {width: window.innerWidth, height: window.innerHeight},
    scrollWidth: document.documentElement.scrollWidth,
    resources: performance.getEntriesByType('resource').map((entry) => entry.name),
    png: await digitPage.sentPNG(),
  };
})
"""

PHONE = (390, 844)  # CSS pixels of a phone's screen
# A seven as a hand draws it, in the canvas's [0, 1] coordinates: the bar,
# then the stem; then a short cross-bar.
SEVEN = (
  ((0.22, 0.2), (0.5, 0.19), (0.76, 0.2), (0.6, 0.5), (0.45, 0.85)),
  ((0.45, 0.52), (0.72, 0.51)),
)


def chromium() -> str | None:
  """The Chromium executable, if installed."""
  return shutil.which('chromium') or shutil.which('chromium-browser')


def _line_matching(stream, pattern: str) -> re.Match:
  """Reads `stream` line by line until one matches `pattern`."""
  for line in stream:
    if match := re.search(pattern, line):
      return match
  raise RuntimeError(f'the process ended without printing {pattern!r}')


@contextlib.contextmanager
def _process(command: list[str], **kwargs):
  process = subprocess.Popen(
    command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, **kwargs
  )
  try:
    yield process
  finally:
    process.kill()
    process.wait()


class Page:
  """One tab of Chromium, driven over the DevTools protocol."""

  def __init__(self, socket):
    self._socket = socket
    self._calls = 0
    self._events: list[dict] = []

  def call(self, method: str, params: dict | None = None) -> dict:
    """Runs a DevTools method; its result (events that arrive meanwhile are kept)."""
    self._calls += 1
    self._socket.send(
      json.dumps({'id': self._calls, 'method': method, 'params': params or {}})
    )
    while True:
      reply = json.loads(self._socket.recv())
      if reply.get('id') == self._calls:
        if 'error' in reply:
          raise RuntimeError(f'{method}: {reply["error"]}')
        return reply['result']
      if 'method' in reply:
        self._events.append(reply)

  def wait_for(self, event: str) -> dict:
    """The next DevTools event named `event` (e.g. 'Page.loadEventFired')."""
    while True:
      for i, message in enumerate(self._events):
        if message['method'] == event:
          return self._events.pop(i)
      self._events.clear()
      reply = json.loads(self._socket.recv())
      if 'method' in reply:
        self._events.append(reply)

  def open(self, url: str) -> None:
    """Navigates to `url` and waits for its load event."""
    self.call('Page.enable')
    self.call('Page.navigate', {'url': url})
    self.wait_for('Page.loadEventFired')

  def evaluate(self, expression: str):
    """The value of a JavaScript expression (a promise is awaited)."""
    reply = self.call(
      'Runtime.evaluate',
      {'expression': expression, 'awaitPromise': True, 'returnByValue': True},
    )
    if 'exceptionDetails' in reply:
      raise RuntimeError(f'the page threw: {str(reply["exceptionDetails"])[:500]}')
    return reply['result'].get('value')

  def screenshot(self) -> bytes:
    """A PNG of the viewport."""
    return base64.b64decode(
      self.call('Page.captureScreenshot', {'format': 'png'})['data']
    )

  def mouse(self, kind: str, x: float, y: float, pressed: bool) -> None:
    """One mouse event at (x, y), CSS pixels of the viewport; the browser turns
    it into pointer events as it does a person's."""
    self.call(
      'Input.dispatchMouseEvent',
      {
        'type': kind,
        'x': x,
        'y': y,
        'button': 'left',
        'buttons': 1 if pressed else 0,
        'clickCount': 1,
        'pointerType': 'mouse',
      },
    )


@contextlib.contextmanager
def browser(window: tuple[int, int] = (1400, 900), url: str = 'about:blank'):
  """Headless Chromium showing `url`: yields its `Page`."""
  import websocket  # websocket-client, a test dependency

  with (
    # Chromium's helper processes may still write the profile as it closes.
    tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile,
    _process(
      [
        chromium(),
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--no-first-run',
        '--remote-debugging-port=0',
        f'--user-data-dir={profile}',
        f'--window-size={window[0]},{window[1]}',
        url,
      ]
    ) as process,
  ):
    devtools = _line_matching(process.stderr, r'ws://127\.0\.0\.1:(\d+)/').group(1)
    with urllib.request.urlopen(f'http://127.0.0.1:{devtools}/json/list') as r:
      target = next(t for t in json.load(r) if t['type'] == 'page')
    socket = websocket.create_connection(
      target['webSocketDebuggerUrl'], timeout=120, suppress_origin=True
    )
    try:
      yield Page(socket)
    finally:
      socket.close()


def hparams_page(
  logdir: str | Path, marker: str = 'model_', timeout_ms: int = 60000
) -> tuple[str, bytes]:
  """The HParams dashboard of `logdir`: its text and a PNG screenshot.

  Args:
    logdir: the directory `tensorboard --logdir` serves.
    marker: text that shows the table of sessions has rendered.
    timeout_ms: how long the page may take to render.

  Returns:
    `(text, png)`.
  """
  tensorboard = Path(sys.executable).with_name('tensorboard')
  with _process(
    [str(tensorboard), f'--logdir={logdir}', '--host=127.0.0.1', '--port=0'],
    env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''},
  ) as board:
    url = _line_matching(board.stderr, r'(http://127\.0\.0\.1:\d+/)').group(1)
    with browser(url=f'{url}#hparams') as page:
      expression = _TEXT_WHEN_RENDERED % {
        'marker': json.dumps(marker),
        'timeout_ms': timeout_ms,
      }
      text = None
      for _ in range(5):  # the page may still be loading itself anew
        try:
          text = page.evaluate(expression)
          break
        except RuntimeError as e:
          if 'Execution context was destroyed' not in str(e):
            raise
      if not isinstance(text, str):
        raise RuntimeError(f'the page gave no text: {str(text)[:500]}')
      return text, page.screenshot()


def draw_digit(
  url: str,
  strokes=SEVEN,
  size: tuple[int, int] = PHONE,
  upload: str | Path | None = None,
) -> tuple[dict, bytes, dict | None]:
  """Draws `strokes` on the serve page at `url`, at a phone's size.

  Args:
    url: the page (`main.py --mode=serve` prints it).
    strokes: polylines in the canvas's [0, 1] coordinates; each is drawn with
      the left button held, through points about 8 CSS pixels apart.
    size: the viewport in CSS pixels (a phone's: the page's mobile layout).
    upload: a picture to give the page's "Upload a photo" afterwards.

  Returns:
    `(shown, png, uploaded)`: what the page shows once the reading of the
    drawing is in
    (`reading`, the server's reply; `label`, `probability` and each of the
    `bars` as shown; `warnings`; `model`, the model's line, and `card`, its
    card's rows as `{term: text}`; the boxes of `pad`, `seen` and each bar, in
    CSS pixels; `viewport`; `scrollWidth`; `png`, the base64 PNG the page
    sent; `resources`, every address the page fetched), a screenshot of the
    viewport, and what the page shows once the reading of `upload` is in
    (`None` without `upload`).
  """
  with browser(window=size) as page:
    page.call(
      'Emulation.setDeviceMetricsOverride',
      {'width': size[0], 'height': size[1], 'deviceScaleFactor': 1, 'mobile': True},
    )
    page.open(url)
    page.evaluate('digitPage.settled()')  # the model card and the bars are in
    box = page.evaluate(
      'JSON.parse(JSON.stringify(document.getElementById("pad").getBoundingClientRect()))'
    )
    for stroke in strokes:
      points = [
        (box['left'] + x * box['width'], box['top'] + y * box['height'])
        for x, y in stroke
      ]
      page.mouse('mousePressed', *points[0], pressed=True)
      for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        steps = max(1, round(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 / 8))
        for step in range(1, steps + 1):
          t = step / steps
          page.mouse('mouseMoved', x0 + t * (x1 - x0), y0 + t * (y1 - y0), True)
      page.mouse('mouseReleased', *points[-1], pressed=False)
    shown = page.evaluate(_SHOWN % {'after': 1})
    png = page.screenshot()
    if upload is None:
      return shown, png, None
    count = page.evaluate('digitPage.readings')
    root = page.call('DOM.getDocument')['root']['nodeId']
    field = page.call('DOM.querySelector', {'nodeId': root, 'selector': '#photo'})
    files = {'files': [str(Path(upload).resolve())], 'nodeId': field['nodeId']}
    page.call('DOM.setFileInputFiles', files)
    return shown, png, page.evaluate(_SHOWN % {'after': count + 1})


@contextlib.contextmanager
def serving(workdir: str | Path):
  """`main.py --mode=serve --workdir=WORKDIR --port=0`: yields its URL."""
  repo = Path(__file__).resolve().parent.parent
  with (
    tempfile.TemporaryFile('w+') as log,  # the access log, shown if it fails
    subprocess.Popen(
      [sys.executable, 'main.py', '--mode=serve', f'--workdir={workdir}', '--port=0'],
      cwd=repo,
      stdout=subprocess.PIPE,
      stderr=log,
      text=True,
    ) as server,
  ):
    try:
      try:
        url = _line_matching(server.stdout, r'(http://\S+/)').group(1)
      except RuntimeError:
        server.wait()
        log.seek(0)
        sys.exit(log.read().strip().splitlines()[-1])
      yield url
    finally:
      server.terminate()


def main(argv: list[str]) -> None:
  if len(argv) != 4 or argv[1] not in ('hparams', 'serve'):
    sys.exit(__doc__.split('\n\n')[1])
  kind, workdir, out = argv[1:]
  if kind == 'hparams':
    text, png = hparams_page(Path(workdir) / 'tensorboard')
    names = sorted(set(re.findall(r'model_\d+', text)))
    print(f'{len(names)} models on the page: {", ".join(names)}')
  else:
    with serving(workdir) as url:
      shown, png, _ = draw_digit(url)
    print(f'the page reads {shown["label"]} ({shown["probability"]})')
  Path(out).write_bytes(png)


if __name__ == '__main__':
  main(sys.argv)
