"""The suite's own set-up: the CPU backend, and xdist groups that take effect."""

import jax
import pytest


def test_the_cpu_backend_is_pinned():
  assert jax.default_backend() == 'cpu'


@pytest.mark.xdist_group('harness')
def test_xdist_groups_take_effect(request):
  """Under `pytest -n --dist loadgroup` (`make test`) the tests of a group run
  in one worker, which computes their shared fixtures once: xdist marks the
  group in the node id. A pytest that xdist cannot mark ignores the groups."""
  if not getattr(request.config.option, 'loadgroup', False):
    pytest.skip('not run with pytest -n --dist loadgroup')
  assert request.node.nodeid.endswith('@harness')
