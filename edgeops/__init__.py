"""edgeops: take a trained model to a fleet of small devices and keep it healthy there.

The package is split by side so that a board imports only what it runs:

* ``edgeops`` (this package): what every side shares — errors, bundle format, trust root
  and signed metadata, wire protocol, configuration, the CLI.
* ``edgeops.converters``: ONNX to TFLite conversion, quantization and validation (host only).
* ``edgeops.fleet``: fleet trust set-up, registry, rollouts, status and the fleet service.
* ``edgeops.agent``: the device daemon.
* ``edgeops.hardware``: board profiles, detection and install assets.

Importing ``edgeops`` imports nothing but the standard library.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
