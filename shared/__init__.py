"""What the gateway and the node both use; it knows neither of them."""
