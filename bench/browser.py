"""TensorBoard's HParams dashboard in headless Chromium, for a test and the gallery.

  .venv/bin/python bench/browser.py SWEEP_WORKDIR docs/gallery/tensorboard_hparams.png

`hparams_page(logdir)` starts `tensorboard --logdir` bound to 127.0.0.1 on a
free port, opens its HParams dashboard in headless Chromium (Debian's
`chromium`), waits until the dashboard has rendered its table of sessions,
and returns the page's text (shadow DOM included) and a PNG screenshot.
Chromium is driven over the DevTools protocol (`websocket-client`).
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
  import websocket  # websocket-client, a test dependency

  tensorboard = Path(sys.executable).with_name('tensorboard')
  with (
    tempfile.TemporaryDirectory() as profile,
    _process(
      [str(tensorboard), f'--logdir={logdir}', '--host=127.0.0.1', '--port=0'],
      env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''},
    ) as board,
  ):
    url = _line_matching(board.stderr, r'(http://127\.0\.0\.1:\d+/)').group(1)
    with _process(
      [
        chromium(),
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--remote-debugging-port=0',
        f'--user-data-dir={profile}',
        '--window-size=1400,900',
        f'{url}#hparams',
      ]
    ) as browser:
      devtools = _line_matching(browser.stderr, r'ws://127\.0\.0\.1:(\d+)/').group(1)
      with urllib.request.urlopen(f'http://127.0.0.1:{devtools}/json/list') as r:
        page = next(t for t in json.load(r) if t['type'] == 'page')
      socket = websocket.create_connection(
        page['webSocketDebuggerUrl'], timeout=120, suppress_origin=True
      )
      try:
        expression = _TEXT_WHEN_RENDERED % {
          'marker': json.dumps(marker),
          'timeout_ms': timeout_ms,
        }
        arguments = {
          'expression': expression,
          'awaitPromise': True,
          'returnByValue': True,
        }
        for attempt in range(5):  # the page may still be loading itself anew
          reply = _call(socket, attempt + 1, 'Runtime.evaluate', arguments)
          if 'result' in reply:
            break
        text = reply['result'].get('value')
        if not isinstance(text, str):
          raise RuntimeError(f'the page gave no text: {str(reply)[:500]}')
        png = _call(socket, 9, 'Page.captureScreenshot', {'format': 'png'})['data']
      finally:
        socket.close()
  return text, base64.b64decode(png)


def _call(socket, call_id: int, method: str, params: dict) -> dict:
  socket.send(json.dumps({'id': call_id, 'method': method, 'params': params}))
  while True:
    reply = json.loads(socket.recv())
    if reply.get('id') == call_id:
      if 'Execution context was destroyed' in str(reply.get('error')):
        return {}
      if 'error' in reply:
        raise RuntimeError(f'{method}: {reply["error"]}')
      return reply['result']


if __name__ == '__main__':
  text, png = hparams_page(Path(sys.argv[1]) / 'tensorboard')
  Path(sys.argv[2]).write_bytes(png)
  names = sorted(set(re.findall(r'model_\d+', text)))
  print(f'{len(names)} models on the page: {", ".join(names)}')
