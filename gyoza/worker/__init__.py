"""The worker: one per machine. Reports resources, receives assignments, runs each attempt in a container (or a
local process) through the op IO contract, and reports events, outputs and logs back to the server."""
