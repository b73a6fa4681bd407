"""The only package that talks to NATS: connection, topology, typed KV records, publishing."""
