"""The control plane: the admin API and CLI, switch pre-checks and watch, drills, the
gateway roster and the dashboard. It reads the gateway through ``view.GatewayView`` only."""
