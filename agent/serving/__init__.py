"""Serving: the active model with zero-downtime swap, and the inference API.

* :class:`ModelHolder` — holds the active model; ``use()``, ``infer()`` (the in-process
  API), ``swap()`` (atomic switch, old model drained then closed), ``retire()``.
* :class:`InferenceServer` / :class:`ApiConfig` — the Open Inference Protocol (KServe v2)
  REST API with the binary tensor data extension, on 127.0.0.1 or a Unix socket.
* :mod:`edgeops.agent.serving.protocol` — request/response codecs for clients too, and
  :class:`UnixHTTPConnection` to reach the API on its Unix socket.
"""

from __future__ import annotations

from edgeops.agent.serving.client import UnixHTTPConnection
from edgeops.agent.serving.holder import ActiveModel, ModelHolder, ModelInfo
from edgeops.agent.serving.http import ApiConfig, InferenceServer
from edgeops.agent.serving.protocol import (
    HEADER_LENGTH,
    InferRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

__all__ = [
    "HEADER_LENGTH",
    "ActiveModel",
    "ApiConfig",
    "InferRequest",
    "InferenceServer",
    "ModelHolder",
    "ModelInfo",
    "UnixHTTPConnection",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]
