"""geogate gateway (lands with issue 4)."""
