"""`--mode=serve`: a page to draw a digit on, read by a workdir's model as you draw.

  python main.py --mode=serve --workdir=runs/default [--port=8000] [--host=127.0.0.1]

The model (a train workdir's `params.npz`, or a sweep workdir's best) is
loaded once; the page and `POST /api/predict` read pictures with the code
path of `--mode=predict` (`mlp.classifier`); `mlp.web` is the server. The
workdir is only read. The server listens on 127.0.0.1 unless `--host` says
otherwise, and warns when it does; Ctrl-C stops it (`main.py`: exit 130).
"""

import sys
from http.server import ThreadingHTTPServer
from typing import TextIO

from mlp import classifier, web


def start(
  workdir: str,
  port: int = 8000,
  host: str = '127.0.0.1',
  out: TextIO = sys.stdout,
  err: TextIO = sys.stderr,
) -> ThreadingHTTPServer:
  """Loads `workdir`'s model and listens; prints the URL to open.

  Args:
    workdir: a train or sweep workdir.
    port: the port to listen on; 0 for a free one.
    host: the address to listen on.
    out: where the URL to open is printed (one line).
    err: where the warning about listening beyond this machine goes.

  Returns:
    The server, listening but not yet serving (`serve_forever()`).

  Raises:
    UserError: for a workdir without usable params, or a host or port the
      server cannot listen on.
  """
  app = web.App(classifier.load(workdir))
  server = web.make_server(app, host, port)
  if not web.is_loopback(server):
    err.write(
      f'Warning: --host={host} lets every machine that reaches this one on port '
      f'{server.server_address[1]} use the page (there is no login); '
      'leave --host out to serve this machine only\n'
    )
    err.flush()
  out.write(f'Serving {app.classifier.path} at {web.url(server)} (Ctrl-C stops it)\n')
  out.flush()
  return server


def run(workdir: str, port: int = 8000, host: str = '127.0.0.1') -> None:
  """`--mode=serve`: `start`, then serves until interrupted (Ctrl-C, SIGTERM).

  Raises:
    UserError: as `start`.
  """
  with start(workdir, port, host) as server:
    server.serve_forever()
