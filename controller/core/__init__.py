"""The pure decision core: (spec, status, observations, now) -> new status + actions.

Nothing here does I/O or imports a client library (tests/unit/test_layers.py enforces it), so
every decision is reproducible from the ModelRollout's status alone.
"""
