"""The webhook gateway: receives Replicate webhooks, verifies them, hands them to generation."""
