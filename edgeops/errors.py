"""The errors edgeops raises, in one tree.

Two roots matter to a caller, because they call for different responses:

* :class:`InputError` — data that came from outside is wrong: a tampered bundle, a
  malformed MQTT message, a bad command-line value, an ONNX op we cannot lower. Retrying
  the same input fails the same way; the message says what was expected and what came.
* :class:`TransportError` — the outside world did not answer: the broker is unreachable,
  a publish timed out, a disk is full. The same operation may succeed later.

Everything edgeops raises on purpose derives from :class:`EdgeopsError`, so the CLI can turn
it into one line and exit code 1. Errors from third-party libraries are translated where
they are caught and chained with ``raise ... from``.

::

    EdgeopsError
    ├── InputError
    │   ├── ConfigError
    │   ├── VerificationError
    │   │   ├── SignatureError
    │   │   │   └── ThresholdError
    │   │   ├── ExpiredError
    │   │   ├── RollbackAttackError
    │   │   ├── DigestMismatchError
    │   │   ├── SizeLimitError
    │   │   └── WrongTargetError
    │   ├── ArchiveError
    │   ├── ProtocolError
    │   ├── ModelError
    │   │   └── InferenceInputError
    │   └── ConversionError
    │       └── UnsupportedOpError
    ├── StateError
    └── TransportError
        └── StorageError
"""

from __future__ import annotations


class EdgeopsError(Exception):
    """Base of every error edgeops raises on purpose."""


class InputError(EdgeopsError):
    """Data from outside (a file, a message, a user's argument) is not acceptable."""


class ConfigError(InputError):
    """A configuration file or command-line value is missing or invalid."""


class VerificationError(InputError):
    """A signed object or a downloaded artifact failed a trust check."""


class SignatureError(VerificationError):
    """A signature is missing, made by an unknown key, or does not verify."""


class ThresholdError(SignatureError):
    """Fewer distinct trusted keys signed than the role's threshold requires."""


class ExpiredError(VerificationError):
    """Signed metadata is past its expiry time (a freeze attack, or a stale fleet)."""


class RollbackAttackError(VerificationError):
    """A version, release counter or directive sequence went backwards or repeated."""


class DigestMismatchError(VerificationError):
    """Bytes do not hash to the digest their signed metadata declares."""


class SizeLimitError(VerificationError):
    """Data is larger than declared or larger than a configured cap (endless data)."""


class WrongTargetError(VerificationError):
    """Signed metadata is genuine but meant for another device, group or board."""


class ArchiveError(InputError):
    """A bundle archive is malformed or unsafe to unpack (links, absolute paths, ``..``)."""


class ProtocolError(InputError):
    """An MQTT topic or message does not follow the wire protocol."""


class ModelError(InputError):
    """A model file cannot be read, loaded or run."""


class InferenceInputError(ModelError):
    """Inference inputs do not match the model's input specs (name, shape, dtype or size).

    Kept apart from other :class:`ModelError` cases because it is the caller's fault, not
    the model's: it is answered with HTTP 400 and does not count against a model's health.
    """


class ConversionError(InputError):
    """A model cannot be converted; the message names the node and the reason."""


class UnsupportedOpError(ConversionError):
    """The model uses an operator or attribute the converter cannot lower."""

    def __init__(self, op_type: str, node: str, detail: str = "") -> None:
        self.op_type = op_type
        self.node = node
        message = f"unsupported op {op_type} at node {node!r}"
        super().__init__(f"{message}: {detail}" if detail else message)


class StateError(EdgeopsError):
    """An operation was called out of order, or persisted state is inconsistent."""


class TransportError(EdgeopsError):
    """The broker, the network or the local disk did not do what was asked."""


class StorageError(TransportError):
    """Reading or writing durable state on disk failed."""


__all__ = [
    "ArchiveError",
    "ConfigError",
    "ConversionError",
    "DigestMismatchError",
    "EdgeopsError",
    "ExpiredError",
    "InferenceInputError",
    "InputError",
    "ModelError",
    "ProtocolError",
    "RollbackAttackError",
    "SignatureError",
    "SizeLimitError",
    "StateError",
    "StorageError",
    "ThresholdError",
    "TransportError",
    "UnsupportedOpError",
    "VerificationError",
    "WrongTargetError",
]
