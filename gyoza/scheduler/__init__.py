"""The scheduler: runs inside every server process, acts only in the one holding the leader lease."""
