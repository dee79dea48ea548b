"""Where calls may go: the topology, the node set and its writers (active probes, outlier
detection, discovery), and the pure balancer that reads it."""
