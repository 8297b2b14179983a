"""Traffic routers: one module per backend, each a routers.base.RouterPlan, all behind routers.base.TrafficRouter."""
