"""The annotations a human (or CI) sets on a ModelRollout to ask the controller for something,
spelled once for the CLI that writes them and the reconciler that reads them."""

from __future__ import annotations

from controller.api.models import GROUP

PROMOTE = f"{GROUP}/promote"
ABORT = f"{GROUP}/abort"
RETRY = f"{GROUP}/retry"
