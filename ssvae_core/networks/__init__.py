"""Built-in network families."""
