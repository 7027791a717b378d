"""Sub-commands of the smartcity CLI, one module each."""
