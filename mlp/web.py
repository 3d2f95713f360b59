"""The HTTP server of `--mode=serve`: one page to draw a digit on, and its API.

Routes (anything else is a 404; nothing is looked up on disk by the request's
path, so no `..` or encoded path reaches a file):

- `GET /`, `/app.js`, `/style.css`: the page, from `mlp/serve_static/`, read
  once at start-up;
- `GET /api/model`: the model card (`classifier.model_card`) as JSON;
- `POST /api/predict`: a PNG or JPEG body (`Content-Type: image/png` or
  `image/jpeg`) -> `{'label', 'probability', 'probabilities', 'flag',
  'warnings', 'image'}`, the picture read by `classifier`, the code path
  of `--mode=predict`.

A bad request gets a 4xx status and `{'error': '...'}`: an unknown path (404),
a wrong method (405), no `Content-Length` (411), a body over `MAX_BODY_BYTES`
(413), a picture over `MAX_PIXELS` (413), another content type (415), a body
that is not a picture PIL can read (422). The server is the standard
library's `ThreadingHTTPServer`: one thread per connection, at most
`os.cpu_count()` pictures read at once (reading is CPU work, and a large
picture's arrays take memory while it is read).
"""

import errno
import http.client
import io
import ipaddress
import json
import os
import socket
import socketserver
import threading
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image

from mlp import classifier as classifier_lib
from mlp.digit_image import IMAGE_SHAPE, Digit
from mlp.errors import UserError

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 25_000_000
IMAGE_TYPES = ('image/png', 'image/jpeg')
STATIC_DIR = Path(__file__).with_name('serve_static')
STATIC_FILES = {
  '/': ('index.html', 'text/html; charset=utf-8'),
  '/app.js': ('app.js', 'text/javascript; charset=utf-8'),
  '/style.css': ('style.css', 'text/css; charset=utf-8'),
}
ROUTES = {
  **dict.fromkeys(STATIC_FILES, ('GET', 'HEAD')),
  '/api/model': ('GET', 'HEAD'),
  '/api/predict': ('POST',),
}
# Every response: the page takes nothing from elsewhere, and is not framed.
HEADERS = {
  'Content-Security-Policy': (
    "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'"
  ),
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
}


class RequestError(Exception):
  """A bad request: its 4xx status and one line for the client."""

  def __init__(self, status: int, message: str, headers: dict | None = None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers or {}


class App:
  """What the server serves: the page's files, the model card, the classifier.

  Args:
    classifier: the loaded model; its workdir is only read.
    concurrency: how many pictures are read at once, at most.
  """

  def __init__(self, classifier: classifier_lib.Classifier, concurrency: int = 0):
    self.classifier = classifier
    self.card = json.dumps(classifier_lib.model_card(classifier)).encode()
    self.files = {
      route: ((STATIC_DIR / name).read_bytes(), content_type)
      for route, (name, content_type) in STATIC_FILES.items()
    }
    self._slots = threading.BoundedSemaphore(concurrency or os.cpu_count() or 1)
    # The first call compiles the network for one picture; not a user's request.
    classifier_lib.classify(
      classifier.params, [Digit(np.zeros(IMAGE_SHAPE, np.float32))]
    )

  def predict(self, body: bytes) -> dict:
    """The reading of the picture in `body` (PNG or JPEG).

    Returns:
      `{'label', 'probability', 'probabilities', 'flag', 'warnings',
      'image'}`: as `classifier.classify` says (`warnings` a list of its
      warning, `image` the 28 rows of the model's input, 4 decimals).

    Raises:
      RequestError: 413 for a picture over `MAX_PIXELS`, 422 for a body that
        is not a PNG or JPEG picture.
    """
    with self._slots:
      try:
        digit = classifier_lib.read_picture(
          io.BytesIO(body), formats=('PNG', 'JPEG'), max_pixels=MAX_PIXELS
        )
      except (classifier_lib.PictureTooLarge, Image.DecompressionBombError) as e:
        raise RequestError(413, ' '.join(str(e).split())) from None
      except classifier_lib.READ_ERRORS as e:
        reason = ' '.join(str(e).split())[:200] or type(e).__name__
        raise RequestError(
          422, f'cannot read the body as a PNG or JPEG picture ({reason})'
        ) from None
      (result,) = classifier_lib.classify(self.classifier.params, [digit])
    image = result.pop('image')
    warning = result.pop('warning')
    return {
      **result,
      'warnings': [warning] if warning else [],
      'image': np.round(image.astype(np.float64), 4).tolist(),
    }


class _Handler(BaseHTTPRequestHandler):
  """One connection's requests; every method goes through `_dispatch`."""

  protocol_version = 'HTTP/1.1'  # keep-alive: a page's requests share a connection
  server_version = 'mlp-serve'
  timeout = 60  # seconds a connection may stay silent before it is closed
  server: '_Server'

  def version_string(self) -> str:
    return self.server_version  # not Python's version: nobody needs to know it

  def __getattr__(self, name: str):
    # BaseHTTPRequestHandler calls do_METHOD; an unknown method is a 405 here
    # (its default is 501, a server error).
    if name.startswith('do_'):
      return self._dispatch
    raise AttributeError(name)

  def _dispatch(self) -> None:
    self._body_read = False
    try:
      status, body, content_type = self._route()
    except RequestError as e:
      self._send_error_json(e.status, e.message, e.headers)
      return
    except Exception:  # noqa: BLE001 -- a bug: logged; the server keeps serving
      logging.error(
        '%s %s failed:\n%s', self.command, self.path, traceback.format_exc()
      )
      self._send_error_json(500, 'the server failed on this request (see its log)')
      return
    self._send(status, body, content_type)

  def _route(self) -> tuple[int, bytes, str]:
    path = urllib.parse.urlsplit(self.path).path
    if path not in ROUTES:
      raise RequestError(404, f'no such page: {path[:100]}; the page is at /')
    allowed = ROUTES[path]
    if self.command not in allowed:
      raise RequestError(
        405,
        f'{self.command[:20]} is not allowed on {path}: use {" or ".join(allowed)}',
        {'Allow': ', '.join(allowed)},
      )
    if path in self.server.app.files:
      body, content_type = self.server.app.files[path]
      return 200, body, content_type
    if path == '/api/model':
      return 200, self.server.app.card, 'application/json'
    result = self.server.app.predict(self._read_image_body())
    return 200, json.dumps(result).encode(), 'application/json'

  def _read_image_body(self) -> bytes:
    content_type = self.headers.get('Content-Type', '').split(';')[0].strip().lower()
    if content_type not in IMAGE_TYPES:
      raise RequestError(
        415,
        f'Content-Type must be {" or ".join(IMAGE_TYPES)}, not '
        f'{content_type[:100] or "missing"}',
      )
    length = self.headers.get('Content-Length')
    if 'Transfer-Encoding' in self.headers or length is None:
      raise RequestError(411, 'send the picture with a Content-Length header')
    if not length.strip().isdigit():
      raise RequestError(400, f'Content-Length {length[:40]!r} is not a number')
    if int(length) > MAX_BODY_BYTES:
      raise RequestError(
        413,
        f'the body has {int(length)} bytes, over the limit of '
        f'{MAX_BODY_BYTES // 2**20} MB: send a smaller picture',
      )
    body = self.rfile.read(int(length))
    self._body_read = True
    if len(body) < int(length):
      self.close_connection = True
      raise RequestError(400, 'the body ended before its Content-Length')
    return body

  def _send(
    self, status: int, body: bytes, content_type: str, headers: dict | None = None
  ) -> None:
    self.send_response(status)
    for name, value in {**HEADERS, **(headers or {})}.items():
      self.send_header(name, value)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    # A body the request had and this server did not read would be taken
    # for the next request: close the connection instead.
    unread = self.headers.get('Content-Length', '0') not in ('', '0')
    if not getattr(self, '_body_read', False) and (
      unread or 'Transfer-Encoding' in self.headers
    ):
      self.close_connection = True
    if self.close_connection:
      self.send_header('Connection', 'close')
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _send_error_json(self, status: int, message: str, headers=None) -> None:
    body = json.dumps({'error': message}).encode()
    self._send(status, body, 'application/json', headers)

  def send_error(self, code: int, message: str | None = None, explain=None) -> None:
    """The base class's errors (a malformed request line, a header too long,
    a timeout) as JSON too; the connection is closed after them."""
    self.close_connection = True
    if self.request_version == 'HTTP/0.9':  # a garbled request line: long gone
      self.request_version = 'HTTP/1.0'  # (0.9 would leave out the status line)
    if getattr(self, 'headers', None) is None:
      self.headers = http.client.HTTPMessage()
    status = http.HTTPStatus(code)
    self._send_error_json(code, message or status.phrase)

  def log_message(self, format: str, *args) -> None:  # noqa: A002 -- the base's name
    logging.info('%s %s', self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
  daemon_threads = True  # a stopped server does not wait for open connections
  # Connections waiting to be accepted; socketserver's 5 resets a burst of
  # requests (several tabs, a script's parallel requests).
  request_queue_size = 128
  app: App

  def server_bind(self) -> None:
    # HTTPServer.server_bind looks up the host's domain name, which can take
    # seconds without DNS; the name is not used.
    socketserver.TCPServer.server_bind(self)
    self.server_name, self.server_port = self.server_address[:2]


def make_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
  """A server for `app` listening on `host:port` (not yet serving).

  Args:
    app: what to serve.
    host: an address or name of this machine (e.g. '127.0.0.1', '0.0.0.0', '::').
    port: the port; 0 for a free one (`server.server_address[1]` says which).

  Returns:
    The server; `serve_forever()` serves, `server_close()` stops listening.

  Raises:
    UserError: for a host that does not resolve or is not this machine's, a
      port in use, or a port this user may not listen on.
  """
  try:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
  except (socket.gaierror, UnicodeError) as e:
    raise UserError(
      f'--host={host} does not resolve ({getattr(e, "strerror", None) or e}): pass '
      'an address of this machine, e.g. --host=127.0.0.1'
    ) from None
  server_class = type('Server', (_Server,), {'address_family': family})
  try:
    server = server_class((host, port), _Handler)
  except OSError as e:
    if e.errno == errno.EADDRINUSE:
      raise UserError(
        f'port {port} is in use on {host}: pass another --port (or --port=0 for '
        'a free one), or stop the program that listens there'
      ) from None
    if e.errno == errno.EACCES:
      raise UserError(
        f'no permission to listen on port {port}: pass --port=8000 (ports below '
        '1024 need root), or --port=0 for a free one'
      ) from None
    if e.errno == errno.EADDRNOTAVAIL:
      raise UserError(
        f'--host={host} is not an address of this machine: pass --host=127.0.0.1 '
        '(this machine only) or --host=0.0.0.0 (every network)'
      ) from None
    raise UserError(
      f'cannot listen on {host} port {port}: {e.strerror or e}; pass another '
      '--host or --port'
    ) from None
  server.app = app
  return server


def is_loopback(server: ThreadingHTTPServer) -> bool:
  """Whether `server` listens on a loopback address only (127.0.0.0/8, ::1)."""
  return ipaddress.ip_address(server.server_address[0]).is_loopback


def url(server: ThreadingHTTPServer) -> str:
  """The address to open in a browser on this machine (`http://HOST:PORT/`)."""
  address, port = server.server_address[:2]
  if ipaddress.ip_address(address).is_unspecified:  # every address: this one works
    address = '127.0.0.1' if server.address_family == socket.AF_INET else '::1'
  if ':' in address:
    address = f'[{address}]'
  return f'http://{address}:{port}/'
