"""The gateway: one folder per plane (dataplane, routing, access, control, ops) and the
local launcher; ``server.py`` assembles the planes into one process (docs/design.md)."""
