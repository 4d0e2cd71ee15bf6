"""Mapping: from workloads to schedules, programs and predicted cycles, traffic and energy."""
