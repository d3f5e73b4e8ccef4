"""Configuration from the environment, resolved when asked (never at import time).

Every ``STEMSPLIT_*`` variable is read here and only here, each time a function is called, so a test
(or a long-lived process) that changes ``os.environ`` sees the change at once.

=========================  ==================================================================
variable                   meaning
=========================  ==================================================================
``STEMSPLIT_CACHE_DIR``    cache root (default: ``platformdirs.user_cache_path("stemsplit")``);
                           ``~`` is expanded; empty means unset. Weights go to ``<root>/checkpoints``.
``STEMSPLIT_OFFLINE``      true (``1``, ``true``, ``yes``, ``on``; any case) → never open a socket.
``STEMSPLIT_MODEL_URL``    base URL of a mirror; replaces ``https://dl.fbaipublicfiles.com/demucs/``
                           (the sub-folders below it, e.g. ``hybrid_transformer/``, are kept).
``STEMSPLIT_DEBUG``        true → the CLI shows tracebacks for known errors too.
``STEMSPLIT_CPU_BACKEND``  ``auto`` (default), ``torch``, ``openvino`` or ``onnxruntime``: what runs the
                           networks' trunk on the CPU (``auto``: OpenVINO on Intel, else ONNX Runtime).
=========================  ==================================================================

TLS trust (read for the downloader, in this order): ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``,
``SSL_CERT_FILE``, ``SSL_CERT_DIR``. Proxies (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
``NO_PROXY``) are left to ``requests``, which reads them itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_CACHE_DIR = "STEMSPLIT_CACHE_DIR"
ENV_OFFLINE = "STEMSPLIT_OFFLINE"
ENV_MODEL_URL = "STEMSPLIT_MODEL_URL"
ENV_DEBUG = "STEMSPLIT_DEBUG"
ENV_CPU_BACKEND = "STEMSPLIT_CPU_BACKEND"

# Checked in this order; the first one set wins. requests itself reads only the first two, so
# SSL_CERT_FILE / SSL_CERT_DIR (what OpenSSL and most other tools honour) are passed on by us.
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")

APP_NAME = "stemsplit"
CHECKPOINTS_SUBDIR = "checkpoints"

# The fixed signature line of the Cache Directory Tagging Specification (https://bford.info/cachedir/),
# which backup tools (tar --exclude-caches, restic, borg …) use to skip the folder.
_CACHEDIR_TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
_CACHEDIR_TAG_TEXT = (
    f"{_CACHEDIR_TAG_SIGNATURE}\n"
    "# This file is a cache directory tag created by stemsplit.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)

_TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "t"})


def _is_true(value: str | None) -> bool:
    """Whether an environment value means "on".

    Args:
        value: the raw value (``None`` when the variable is unset).

    Returns:
        True for ``1``, ``true``, ``yes``, ``on``, ``y``, ``t`` in any case, surrounding spaces ignored;
        False for anything else (``0``, ``false``, empty, unset).
    """
    return value is not None and value.strip().lower() in _TRUE_WORDS


def _env(name: str) -> str | None:
    """The variable's value with surrounding spaces removed, or ``None`` when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def cache_dir() -> Path:
    """The cache root: ``$STEMSPLIT_CACHE_DIR`` if set, else the platform's user cache folder.

    Nothing is created; see :func:`ensure_cache_dir`.
    """
    override = _env(ENV_CACHE_DIR)
    if override is not None:
        return Path(override).expanduser()
    return platformdirs.user_cache_path(APP_NAME)


def checkpoints_dir(root: Path | None = None) -> Path:
    """The folder that holds the weight files (``<cache root>/checkpoints``), flat, under official names.

    Args:
        root: a cache root to use instead of :func:`cache_dir` (tests, the ``cache_dir=`` arguments).
    """
    return (root if root is not None else cache_dir()) / CHECKPOINTS_SUBDIR


def ensure_cache_dir(root: Path | None = None) -> Path:
    """Create the cache root and its ``checkpoints`` folder if needed, with a ``CACHEDIR.TAG``.

    Args:
        root: the cache root (default: :func:`cache_dir`).

    Returns:
        The checkpoints folder.

    Raises:
        OSError: the folder cannot be created (for example a read-only home).
    """
    root = root if root is not None else cache_dir()
    folder = checkpoints_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    tag = root / "CACHEDIR.TAG"
    if not tag.exists():
        try:
            tag.write_text(_CACHEDIR_TAG_TEXT, encoding="ascii")
        except OSError:
            pass  # the tag only helps backup tools; a cache that works without it is still fine
    return folder


def offline(override: bool | None = None) -> bool:
    """Whether downloads are forbidden.

    Args:
        override: an explicit choice (the CLI's ``--offline`` passes ``True``); ``None`` reads
            ``$STEMSPLIT_OFFLINE``.
    """
    return override if override is not None else _is_true(os.environ.get(ENV_OFFLINE))


def model_base_url() -> str | None:
    """The mirror base URL from ``$STEMSPLIT_MODEL_URL`` (always ending in ``/``), or ``None``."""
    value = _env(ENV_MODEL_URL)
    if value is None:
        return None
    return value if value.endswith("/") else value + "/"


def debug() -> bool:
    """Whether ``$STEMSPLIT_DEBUG`` asks for tracebacks of known errors."""
    return _is_true(os.environ.get(ENV_DEBUG))


def ca_bundle() -> str | None:
    """The CA bundle file (or folder) the environment asks TLS verification to use, if any.

    Returns:
        The first set of ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``SSL_CERT_FILE``,
        ``SSL_CERT_DIR``; ``None`` when none is set (then the certifi bundle shipped with requests is used).
    """
    for name in CA_BUNDLE_VARS:
        value = _env(name)
        if value is not None:
            return value
    return None


def cpu_backend() -> str:
    """``$STEMSPLIT_CPU_BACKEND`` lower-cased (``auto`` when unset or empty); the engine checks the name."""
    return (_env(ENV_CPU_BACKEND) or "auto").lower()
