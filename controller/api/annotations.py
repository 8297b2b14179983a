"""The annotations a human (or CI) sets on a ModelRollout to ask the controller for something.

The CLI writes them, the reconciler reads them, the CLI's `wait` checks them against status:
one spelling for all three. Each value acts once (status records the value handled), so a
repeated command is safe.
"""

from __future__ import annotations

from controller.api.models import GROUP

PROMOTE = f"{GROUP}/promote"
ABORT = f"{GROUP}/abort"
RETRY = f"{GROUP}/retry"
