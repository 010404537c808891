# Minimal stand-in for the `wendelin` package (only what the interop tests need).
