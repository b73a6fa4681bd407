"""The REST server (Quart on Hypercorn): transport only. Routes parse a model, call a service, return a model."""
