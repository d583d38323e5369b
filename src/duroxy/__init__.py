"""duroxy: durable execution for Python."""
