"""The server process: listeners bound first, the mailroot lock, signals."""
