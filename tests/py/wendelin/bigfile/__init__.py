# Minimal stand-in for `wendelin.bigfile`: see file_zodb.py.
