"""Remote analysis on Dask distributed: workers on other machines decode and run the models; the
agent (or ``nomarr scan``) stays the single writer of the database and the tags.

:mod:`.secrets` makes and loads the cluster's TLS certificates and shared secret,
:mod:`.worker` is what runs in ``nomarr worker`` (models loaded once, a signed hello, the task
function), :mod:`.executor` is the agent's side (admission by provenance, result checks, local
fallback, speculative local runs), :mod:`.cli` the ``nomarr worker`` / ``nomarr scheduler``
commands. Dask is an optional dependency (``pip install 'nomarr[distributed]'``); nothing here is
imported by a plain scan.
"""

from __future__ import annotations


class RemoteUnavailable(Exception):
    """Dask distributed is not installed."""


def require() -> None:
    """Raise a one-line, actionable error when Dask distributed is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError as e:
        raise RemoteUnavailable(
            "remote analysis needs Dask distributed: pip install 'nomarr[distributed]'"
        ) from e
