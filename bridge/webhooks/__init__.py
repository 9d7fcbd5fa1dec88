"""Signed webhooks: the payment event outbox, signatures, target validation and delivery."""
