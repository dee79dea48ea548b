"""The data plane: a client call from its handler through geo, the registry snapshot,
the result cache and the balancer to the fenced upstream call."""
