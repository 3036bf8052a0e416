"""The thin HTTP endpoint: wire conventions, authentication, enqueue, wait for the result."""
