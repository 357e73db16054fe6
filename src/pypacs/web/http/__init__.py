"""Shared HTTP plumbing: the one error shape, content negotiation, multipart bodies,
connection bounds, cross-site refusal and the public address."""
