"""Multi-process runs on JAX's own multi-controller runtime.

Every process runs the same program; `jax.devices()` then lists the devices
of all processes, and a sweep's model axis is sharded across all of them.
Each process builds only its own shards of an array (`make_array_from_callback`),
results are gathered to every process (`process_allgather`), and only process
0 writes files.
"""

import contextlib
import socket
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging

from mlp import workdir as workdir_lib
from mlp.errors import UserError


def initialize(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  auto: bool,
  timeout_seconds: int,
) -> None:
  """Joins a multi-process run (a no-op without any of its settings).

  Args:
    coordinator_address: `host:port` of process 0's coordinator service.
    num_processes: how many processes take part.
    process_id: this process's rank, 0 to `num_processes - 1`.
    auto: let JAX detect the cluster (SLURM, Cloud TPU, MPI) by itself.
    timeout_seconds: how long to wait for every process to join.

  Raises:
    UserError: for incomplete settings, or when the processes cannot meet
      within `timeout_seconds`.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if not auto and all(v is None for v in explicit):
    return
  if not auto and any(v is None for v in explicit):
    raise UserError(
      'a multi-process run needs --coordinator_address, --num_processes and --process_id '
      'together (or --distributed where the cluster is detected automatically)'
    )
  if num_processes is not None and num_processes < 1:
    raise UserError(
      f'--num_processes={num_processes} is invalid: expected at least 1 (how many '
      'processes the run has, this one included)'
    )
  if num_processes is not None and not 0 <= (process_id or 0) < num_processes:
    raise UserError(
      f'--process_id={process_id} must be between 0 and {num_processes - 1}'
    )
  if coordinator_address is not None:
    _rendezvous(coordinator_address, num_processes, process_id, timeout_seconds)
  # CPU devices talk over gloo (TCP); GPUs and TPUs use their own collectives.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=timeout_seconds,
      # A process that stops sending heartbeats is given up within the timeout.
      heartbeat_timeout_seconds=timeout_seconds,
      shutdown_timeout_seconds=timeout_seconds,
    )
    jax.devices()  # The processes meet here.
  except Exception as e:  # noqa: BLE001 -- any failure to meet is reported the same way
    reason = ' '.join(str(e).split())[:300]
    raise UserError(
      f'process {process_id} could not join the run at {coordinator_address} within '
      f'{timeout_seconds}s ({reason}); start every process with the same '
      '--coordinator_address and --num_processes, or raise --distributed_timeout'
    ) from None
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  logging.info(
    'Process %d of %d: %d local and %d global devices.',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def _rendezvous(
  address: str, num_processes: int, process_id: int, timeout: float
) -> None:
  """Checks that every process is up before JAX's runtime starts.

  JAX's coordination service aborts the whole process (no exception) when a
  peer never arrives, so the processes first meet over a plain TCP socket on
  the coordinator's port: process 0 listens, the others connect, and a
  missing process becomes a clear error after `timeout` seconds.
  """
  host, port, family = parse_address(address)
  deadline = time.monotonic() + timeout
  if process_id == 0:
    _gather_peers(host, port, family, num_processes - 1, deadline, timeout)
    return
  while True:
    try:
      with socket.create_connection(
        (host, port), timeout=max(deadline - time.monotonic(), 0.1)
      ) as peer:
        peer.settimeout(max(deadline - time.monotonic(), 0.1))
        if peer.recv(1) == b'1':
          return
    except OSError:
      pass
    if time.monotonic() > deadline:
      raise UserError(
        f'process {process_id} could not reach the coordinator (process 0) at {address} '
        f'within {timeout:g}s: start process 0 there, or raise --distributed_timeout'
      )
    time.sleep(0.2)


def parse_address(address: str) -> tuple[str, int, socket.AddressFamily]:
  """`HOST:PORT` or `[IPV6]:PORT` -> host, port, and the host's address family.

  Raises:
    UserError: for a malformed address, a port out of range, or a host that
      does not resolve.
  """
  host, _, port = address.rpartition(':')
  if host.startswith('[') and host.endswith(']'):
    host = host[1:-1]
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(
      f'--coordinator_address={address} must look like HOST:PORT (or [IPV6]:PORT) '
      'with a port from 1 to 65535'
    )
  try:
    family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][0]
  except (socket.gaierror, UnicodeError) as e:
    raise UserError(
      f'--coordinator_address={address}: host {host} is unknown ({e}); pass the '
      "address of process 0's machine"
    ) from None
  return host, int(port), family


def _gather_peers(
  host: str,
  port: int,
  family: socket.AddressFamily,
  count: int,
  deadline: float,
  timeout: float,
) -> None:
  try:
    server = socket.create_server((host, port), family=family, reuse_port=False)
  except OSError as e:
    raise UserError(
      f'process 0 cannot listen on {host}:{port} ({e.strerror}): the port is in use '
      'or the address is not one of this machine; pick a free --coordinator_address'
    ) from None
  with server:
    server.settimeout(0.2)
    peers = []
    try:
      while len(peers) < count:
        if time.monotonic() > deadline:
          raise UserError(
            f'process 0 waited {timeout:g}s at {host}:{port} but only {len(peers)} of '
            f'{count} other processes arrived: start all --num_processes={count + 1} '
            'processes, or raise --distributed_timeout'
          )
        try:
          peers.append(server.accept()[0])
        except TimeoutError:
          continue
      for peer in peers:
        peer.sendall(b'1')
    finally:
      for peer in peers:
        peer.close()


@contextlib.contextmanager
def claim_workdir(workdir: Path):
  """`workdir.claim` for a run of one or many processes: process 0 holds the
  lock, and every process stops if it cannot."""
  if jax.process_count() == 1:
    with workdir_lib.claim(workdir):
      yield
    return
  with contextlib.ExitStack() as stack:
    refusal = None
    if is_writer():
      try:
        stack.enter_context(workdir_lib.claim(workdir))
      except UserError as e:
        refusal = e
    if _multihost().broadcast_one_to_all(np.int32(refusal is not None)):
      raise refusal or UserError(
        f'workdir {workdir} is in use by another run (process 0 could not claim it)'
      )
    yield


def lost_peer(error: BaseException) -> str | None:
  """The `Error:` message for a runtime error of a multi-process run, which
  means that another process of the run stopped; `None` for anything else."""
  if jax.process_count() == 1 or not isinstance(error, jax.errors.JaxRuntimeError):
    return None
  reason = ' '.join(str(error).split())[:200]
  return (
    f'process {jax.process_index()} lost contact with the other processes of the run '
    f'({reason}): see their logs, then run the same command on every process to '
    'resume from the newest checkpoint'
  )


def _multihost():
  """`jax.experimental.multihost_utils`, imported when a multi-process run
  first needs it (a single process never does)."""
  from jax.experimental import multihost_utils

  return multihost_utils


def is_writer() -> bool:
  """Whether this process writes the workdir's files (process 0)."""
  return jax.process_index() == 0


def to_host(tree):
  """A pytree of (possibly multi-process) arrays as NumPy arrays on every process.

  The arrays sharded across processes are replicated by one compiled program
  for the whole tree (one compile per tree structure and shapes, one launch
  of collectives), not one per array.
  """
  if jax.process_count() == 1:
    return jax.device_get(tree)
  leaves, treedef = jax.tree.flatten(tree)
  spread = [
    i
    for i, x in enumerate(leaves)
    if isinstance(x, jax.Array)
    and not x.is_fully_addressable
    and isinstance(x.sharding, jax.sharding.NamedSharding)
  ]
  if spread:
    replicated = tuple(
      leaves[i].sharding.update(spec=jax.sharding.PartitionSpec()) for i in spread
    )
    gathered = jax.jit(_identity, out_shardings=replicated)(
      *(leaves[i] for i in spread)
    )
    for i, x in zip(spread, gathered, strict=True):
      leaves[i] = np.asarray(x.addressable_data(0))
  rest = sorted(set(range(len(leaves))) - set(spread))
  if rest:
    others = _multihost().process_allgather([leaves[i] for i in rest], tiled=True)
    for i, x in zip(rest, others, strict=True):
      leaves[i] = x
  return jax.tree.unflatten(treedef, leaves)


def _identity(*xs):
  return xs


def any_process(flag: bool) -> bool:
  """Whether `flag` is true on any process (every process must call this)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(_multihost().process_allgather(np.asarray(flag))))


def put(value: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array from a value every process holds; each builds its own shards."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
