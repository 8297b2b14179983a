"""Traffic routers, one module per backend behind routers.base.TrafficRouter."""
