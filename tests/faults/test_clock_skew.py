"""Scenario 6: one device's clock is wrong.

The agent takes its wall clock as ``now`` (the one place it reads the date); the test gives
it a clock offset it can move. The tolerance (``edgeops.trust.verify.CLOCK_SKEW``, 5
minutes) applies to a directive *issued* ahead of the device's clock (a board without a
real-time clock runs behind until NTP syncs); expiry has no tolerance: a directive's
lifetime (7 days by default) is the margin for a device whose clock runs ahead.

Pass criterion: a directive not yet valid on the device's clock (issued more than 5 minutes
ahead of it) and one already expired on it are rejected with an event naming the reason,
the device keeps serving its release; a clock 4 minutes behind still installs, and the
device then serves the new release. Sequence numbers of rejected directives are not
consumed: the next valid directive is accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgeops.trust.verify import CLOCK_SKEW

from .rig import Devices, FaultRig, assert_serving

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def rig(tmp_path):
    rig = FaultRig(tmp_path)
    rig.start()
    yield rig
    rig.stop()


def test_a_skewed_clock_rejects_invalid_directives_with_the_reason_and_tolerates_minutes(
    rig, tmp_path
):
    devices = Devices(rig, tmp_path / "devices")
    offset = [timedelta(0)]
    agent = devices.agent(devices.install("skewed"), now=lambda: datetime.now(UTC) + offset[0])
    agent.start()
    try:
        v1 = devices.send("skewed", 1)
        assert devices.wait_outcome("skewed", v1).state == "committed"
        assert_serving(agent, 1)

        # 10 minutes behind: a directive issued now is not valid yet on this device.
        offset[0] = -timedelta(minutes=10)
        early = devices.send("skewed", 2)
        event = devices.wait_outcome("skewed", early)
        assert event.kind == "rejected", event
        assert "issued in the future" in event.reason, event.reason
        assert_serving(agent, 1)

        # 2 hours ahead: a directive that expires in an hour has expired on this device.
        offset[0] = timedelta(hours=2)
        now = datetime.now(UTC)
        late = devices.send("skewed", 3, issued=now, expires=now + timedelta(hours=1))
        event = devices.wait_outcome("skewed", late)
        assert event.kind == "rejected", event
        assert event.reason.startswith("ExpiredError: "), event.reason
        assert_serving(agent, 1)
        assert agent.state.committed is not None
        assert agent.state.committed.digest == v1

        # 4 minutes behind, within the tolerance: installs.
        offset[0] = -timedelta(minutes=4)
        assert timedelta(minutes=4) < CLOCK_SKEW
        fine = devices.send("skewed", 4)
        event = devices.wait_outcome("skewed", fine)
        assert (event.kind, event.state) == ("update_result", "committed"), event
        assert_serving(agent, 4)
    finally:
        agent.stop()
