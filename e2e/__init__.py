"""End-to-end scenarios and `make demo`: real model servers, a stand-in gateway, real traffic.

Nothing in this package is part of the product (`controller/`): it is the world the operator
runs in during the demo and the end-to-end suite.
"""
