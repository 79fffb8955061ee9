"""The dispatcher: claims due work, sends it through a push backend, records the results."""
