"""``edgeops fleet serve``: the fleet manager as a service.

:class:`FleetService` ingests device reports into the registry, drives the rollouts
recorded there, and serves a JSON API, a dashboard page and Prometheus ``/metrics``
(:mod:`edgeops.fleet.service.api`, :mod:`edgeops.fleet.service.metrics`).
"""

from __future__ import annotations

from edgeops.fleet.service.service import FleetService, ServiceConfig, parse_http_address

__all__ = ["FleetService", "ServiceConfig", "parse_http_address"]
