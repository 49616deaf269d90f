"""The command line: thin click commands over the library, rendered with rich."""
