"""The MySQL side: connections, schema introspection, chunked readers."""
