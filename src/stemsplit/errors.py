"""The typed error hierarchy of stemsplit.

Every error the library raises on purpose is a :class:`StemsplitError`. Each also inherits the builtin
that fits it, so callers may catch either (``except FileNotFoundError`` still works). Errors carry
structured attributes (``path``, ``field``, ``expected`` …); only the CLI turns them into text for people.

::

    StemsplitError
    ├── CheckpointError (ValueError)                 a file is not a usable checkpoint
    │   ├── UnsafeCheckpointError                     its pickle asks for something outside the format
    │   ├── UnsupportedCheckpointError                a constructor argument we cannot honour
    │   └── StateDictMismatchError                    missing / unexpected / mis-shaped tensors
    ├── AudioError                                    reading or writing audio
    │   ├── AudioFileNotFoundError (FileNotFoundError)
    │   ├── AudioDecodeError (ValueError)             not audio, corrupt, no audio stream
    │   ├── UnsupportedAudioError (ValueError)        decodable but not usable (e.g. rate < 8 kHz)
    │   ├── AudioWriteError (OSError)
    │   └── InputError                                an unexpected error on one input (a bug): it fails alone
    ├── ModelError                                    resolving and obtaining models
    │   ├── UnknownModelError (LookupError)           a name that is not in the registry
    │   ├── ModelUnavailableError (OSError)           could not be obtained (CLI exit code 3)
    │   │   ├── OfflineModeError                       needed a download while offline
    │   │   ├── DownloadError                          network / HTTP failure
    │   │   ├── ChecksumError                          the bytes do not match the registry hash
    │   │   ├── CorruptCacheError                      a cached file fails to load and to verify
    │   │   └── WorkerModelError                       a Ray worker could not load the model (names the node)
    │   └── UnknownModelFileError (ValueError)        a file to import matches no registry file
    ├── ClusterError (ConnectionError)                a Ray cluster cannot be joined or used
    └── InvalidOptionError (ValueError)               an option value or combination is invalid
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path


def first_line(err: BaseException, *, with_type: bool = False) -> str:
    """The first line of ``err``'s message (its type's name when it has none), for a one-line report;
    ``with_type`` puts the type's name before it (``OSError: …``), for errors that are not ours."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    return f"{type(err).__name__}: {lines[0]}" if with_type else lines[0]


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL |= {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}
_CONTROL |= {0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)}  # undecodable bytes of a file name


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (a newline as ``\\n``, others as ``\\xNN``), and so the
    bytes of a file name that are not UTF-8 (Python's surrogate escapes), so that a message naming any file
    stays on one printable line and cannot move the terminal's cursor."""
    return text.translate(_CONTROL)


class StemsplitError(Exception):
    """Base class of every error stemsplit raises on purpose."""


# --- checkpoints -------------------------------------------------------------------------------


class CheckpointError(StemsplitError, ValueError):
    """A file cannot be read as a model checkpoint.

    Attributes:
        path: the checkpoint file, when the error concerns one.
    """

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle references a global outside the official format; nothing was executed.

    Attributes:
        global_name: the ``module.name`` the pickle asked for.
    """

    def __init__(self, message: str, *, global_name: str, path: Path | str | None = None) -> None:
        super().__init__(message, path=path)
        self.global_name = global_name


class UnsupportedCheckpointError(CheckpointError):
    """The checkpoint asks for a model variant this implementation does not provide.

    Attributes:
        field: the constructor argument (or ``klass``) that is not supported.
        value: its value in the checkpoint.
    """

    def __init__(self, message: str, *, field: str, value: object, path: Path | str | None = None) -> None:
        super().__init__(message, path=path)
        self.field = field
        self.value = value


class StateDictMismatchError(CheckpointError):
    """The checkpoint's tensors do not match the model built from its own arguments.

    Attributes:
        key: the first offending state_dict key.
        expected: the shape the model has (``None`` when the key is unexpected).
        actual: the shape the checkpoint has (``None`` when the key is missing).
    """

    def __init__(
        self,
        message: str,
        *,
        key: str,
        expected: tuple[int, ...] | None,
        actual: tuple[int, ...] | None,
        path: Path | str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.key = key
        self.expected = expected
        self.actual = actual


# --- audio -------------------------------------------------------------------------------------


class AudioError(StemsplitError):
    """Reading or writing an audio file failed.

    Attributes:
        path: the file concerned.
    """

    def __init__(self, message: str, *, path: Path | str) -> None:
        super().__init__(one_line(message))  # it names a file, whose name may hold a newline
        self.path = Path(path)


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The input path does not exist (or is a folder where a file was expected)."""


class AudioDecodeError(AudioError, ValueError):
    """The file cannot be decoded as audio: corrupt, empty, not audio, or without an audio stream."""


class UnsupportedAudioError(AudioError, ValueError):
    """The file decodes but cannot be separated (for example a sample rate below 8 kHz)."""


class AudioWriteError(AudioError, OSError):
    """A stem could not be written."""


class InputError(AudioError):
    """An unexpected error (not one of ours: a bug, or a library's surprise) while one input was probed,
    decoded or written; that input fails with it and the batch goes on.

    Attributes:
        cause: the exception's type name (``AttributeError``).
        detail: its traceback, kept when ``STEMSPLIT_DEBUG`` is on (else None); not part of the message.
    """

    def __init__(self, message: str, *, path: Path | str, cause: str, detail: str | None = None) -> None:
        super().__init__(message, path=path)
        self.cause = cause
        self.detail = detail


# --- models and downloads ----------------------------------------------------------------------


class ModelError(StemsplitError):
    """Resolving or obtaining a model failed."""


class UnknownModelError(ModelError, LookupError):
    """A model name that is not in the registry.

    Attributes:
        name: the name asked for.
        known: the valid names.
        suggestion: the closest valid name, if any is close.
    """

    def __init__(
        self, message: str, *, name: str, known: tuple[str, ...], suggestion: str | None = None
    ) -> None:
        super().__init__(message)
        self.name = name
        self.known = known
        self.suggestion = suggestion

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a key
        return str(self.args[0])


class ModelUnavailableError(ModelError, OSError):
    """The model's files could not be obtained (the CLI exits with code 3).

    Attributes:
        url: the address that was (or would have been) used, if any.
        path: the cache path the file should be at, if known.
    """

    def __init__(self, message: str, *, url: str | None = None, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.path = Path(path) if path is not None else None

    def __str__(self) -> str:  # OSError would otherwise format (errno, strerror)
        return str(self.args[0])


class OfflineModeError(ModelUnavailableError):
    """A download was needed but offline mode is on; no socket was opened."""


class DownloadError(ModelUnavailableError):
    """The download failed (network, TLS, HTTP status, timeout, truncated body)."""


class ChecksumError(ModelUnavailableError):
    """Downloaded or imported bytes do not match the registry's SHA-256.

    Attributes:
        expected: the expected hex digest (or prefix).
        actual: the full hex digest of what was received.
    """

    def __init__(
        self,
        message: str,
        *,
        expected: str,
        actual: str,
        url: str | None = None,
        path: Path | str | None = None,
    ) -> None:
        super().__init__(message, url=url, path=path)
        self.expected = expected
        self.actual = actual


class CorruptCacheError(ModelUnavailableError):
    """A cached weight file fails to load and no longer matches its registry hash.

    Attributes:
        model: the registry name the file belongs to.
        fix: the command line that repairs the cache.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        fix: str,
        url: str | None = None,
        path: Path | str | None = None,
    ) -> None:
        super().__init__(message, url=url, path=path)
        self.model = model
        self.fix = fix


class WorkerModelError(ModelUnavailableError):
    """A Ray worker could not obtain or load the model (``--ray``); the run stops before any track.

    Attributes:
        node: the worker's node, as ``host (ip)``.
    """

    def __init__(self, message: str, *, node: str) -> None:
        super().__init__(message)
        self.node = node


class UnknownModelFileError(ModelError, ValueError):
    """A file offered for import matches no registry file, by name or by hash.

    Attributes:
        path: the file offered.
        actual: its full SHA-256 hex digest.
    """

    def __init__(self, message: str, *, path: Path | str, actual: str) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.actual = actual


# --- clusters ----------------------------------------------------------------------------------


class ClusterError(StemsplitError, ConnectionError):
    """A Ray cluster could not be started, joined or used (``--ray``): unreachable, or no room for a worker."""

    def __str__(self) -> str:  # OSError would otherwise format (errno, strerror)
        return str(self.args[0])


# --- options -----------------------------------------------------------------------------------


class AcceleratorError(StemsplitError, RuntimeError):
    """The GPU failed running the model (no kernel image for this card, a CUDA, cuDNN or cuBLAS error); the
    message names the device and what to do."""


class InvalidOptionError(StemsplitError, ValueError):
    """An option value, or a combination of options, is invalid.

    Attributes:
        option: the option's name as a user would write it (``--segment``), if there is one.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option

    @classmethod
    def bad_value(cls, option: str, value: object, accepted: str) -> InvalidOptionError:
        """The error for a value that ``option`` does not accept, in the wording every option shares:
        the option, the value as given, and what it accepts (``--bit-depth 8 is not valid; use 16, 24
        or 32f``)."""
        shown = f"{value:g}" if isinstance(value, float) else str(value) if value != "" else "''"
        return cls(f"{option} {shown} is not valid; use {accepted}", option=option)


# --- warnings ----------------------------------------------------------------------------------


WARNING_SINK: ContextVar[Callable[[StemsplitWarning], None] | None] = ContextVar(
    "stemsplit_warning_sink", default=None
)
"""Where this thread's :class:`StemsplitWarning` s are filed as they are made: the tracks it works on
(set by :func:`stemsplit.pipeline.results.noting`); None: nowhere."""


class StemsplitWarning(UserWarning):
    """Base class of the warnings stemsplit issues (something worked, but not quite as asked).

    They go through Python's :mod:`warnings` module, and those issued while a track is processed are
    also kept in its :class:`~stemsplit.pipeline.TrackResult` (``warnings``) and in ``--report``: a
    warning is filed under its thread's track(s) (:data:`WARNING_SINK`) when it is made, which
    ``warnings.warn`` does before any filter is consulted, so the record holds it whatever the filters
    do with its display.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        sink = WARNING_SINK.get()
        if sink is not None:
            sink(self)


class AudioWarning(StemsplitWarning):
    """Reading or writing audio went ahead with a caveat."""


class DownmixWarning(AudioWarning):
    """An input with more than two channels was downmixed to stereo for the model."""


class TruncatedAudioWarning(AudioWarning):
    """An input ended early (damaged, or shorter than its header says); what decoded was used."""


class DamagedAudioWarning(AudioWarning):
    """Parts of an input could not be decoded (damaged packets); they became silence of their length."""


class TagCopyWarning(AudioWarning):
    """Tags or cover art could not be read from the input or written onto a stem."""


class SampleRateWarning(AudioWarning):
    """The stems were written at another rate than the input's: the output format cannot store it (MP3
    at 96 kHz, for example).

    Attributes:
        requested: the rate the stems would have had (Hz).
        written: the rate they were written at (Hz).
    """

    def __init__(self, message: str, *, requested: int, written: int) -> None:
        super().__init__(message)
        self.requested = requested
        self.written = written


class NearSilentStemWarning(StemsplitWarning):
    """A stem of a track that is not itself silent came out near-silent: the track probably lacks that
    source (an instrumental's vocals).

    The stem is still written in full; this is a hint about the music, not a fault.

    Attributes:
        stem: the stem's name.
        peak_dbfs: its peak level in dBFS (``-inf`` when every sample is zero).
    """

    def __init__(self, message: str, *, stem: str, peak_dbfs: float) -> None:
        super().__init__(message)
        self.stem = stem
        self.peak_dbfs = peak_dbfs


class SilentInputWarning(StemsplitWarning):
    """The input itself is silent or near-silent, so every stem is too (one warning in place of one per stem).

    Attributes:
        peak_dbfs: the input's peak level in dBFS (``-inf`` when every sample is zero).
    """

    def __init__(self, message: str, *, peak_dbfs: float) -> None:
        super().__init__(message)
        self.peak_dbfs = peak_dbfs


class SidecarWarning(StemsplitWarning):
    """The stems were written but their ``stemsplit.json`` was not, so a re-run will redo the track."""


class DeviceFallbackWarning(StemsplitWarning):
    """The accelerator ran out of memory even with one window per batch, or (``--device auto``) the GPU cannot
    run this torch's kernels; work continued on the CPU."""


class NonFiniteWarning(StemsplitWarning):
    """A batch computed in reduced precision had a non-finite value (an overflow); it was redone in float32."""


class CompileFallbackWarning(StemsplitWarning):
    """``torch.compile`` failed (no compiler, no Triton, ...); the model ran uncompiled instead."""


class CpuBackendFallbackWarning(StemsplitWarning):
    """The OpenVINO CPU backend failed (export, compile or run); the trunk ran in PyTorch instead."""


class SlowPrecisionWarning(StemsplitWarning):
    """An explicit ``--precision`` that this device only emulates or was measured slower in than float32.

    The precision is honoured; the message gives the measured slowdown and the way back (``auto``).
    """


class WorkerLostWarning(StemsplitWarning):
    """A Ray worker was lost (its process or node died) while it had the track; the track was given to
    another worker. Nothing the lost worker had half-written is under a final name."""
