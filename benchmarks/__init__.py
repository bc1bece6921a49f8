"""Performance figures: each module is a command that prints one JSON object."""
