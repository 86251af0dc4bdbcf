"""The fleet side: trust set-up, enrollment, registry, rollouts, status and the fleet service."""
