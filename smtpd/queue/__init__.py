"""The durable queue, its manager (scheduling, retries) and delivery reports."""
