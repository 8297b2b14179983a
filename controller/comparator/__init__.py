"""The shadow comparator: a small service of its own, shipped with the controller (docs/shadow.md).

`python -m controller.comparator --rollout <name>` serves one rollout: the router mirrors
requests to it, it asks both models and counts their agreement for the ShadowDisagreement builtin.
"""
