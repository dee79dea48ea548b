"""`geogate up` / `geogate down`: a whole multi-region deployment on one machine.

Sits above both services (it starts nodes and gateways as processes); neither imports it.
"""
